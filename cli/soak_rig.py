"""The parts ``tavus-callbacks soak`` runs and breaks: the Procfile's processes, a private Redis,
an optional PostgreSQL cluster of its own, the destination (an HTTP sink that can be made slow,
down, 500 or 429) and the spool's disk (a small tmpfs)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cli.services import free_port, listening, redis_server_command

ROOT = Path(__file__).resolve().parents[1]
SPOOL_DISK_BYTES = 4 * 1024 * 1024


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout:.0f}s")
        time.sleep(0.1)


@dataclass
class Process:
    """One process type of the Procfile, in its own session (a signal reaches its children)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Any = None  # a predicate: the process serves
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        if self.ready is not None:
            wait_for(self.ready, 60, self.name)
        return self

    def signal_group(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.popen is None:
            return
        self.signal_group(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.popen.wait(10)
        self.popen = None

    def processes(self) -> list[Any]:
        """The process and its children (psutil.Process)."""
        import psutil  # the bench extra: only the soak needs it, not the CLI's other commands

        if self.popen is None or self.popen.poll() is not None:
            return []
        with contextlib.suppress(psutil.Error):
            main = psutil.Process(self.popen.pid)
            return [main, *main.children(recursive=True)]
        return []

    def usage(self) -> tuple[int, int]:
        """RSS bytes and open files of the process and its children, together."""
        import psutil

        rss = files = 0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
                files += process.num_fds()
        return rss, files


def redis_process(data_dir: Path, port: int) -> Process:
    """A private redis-server with AOF, every write fsynced before it is answered."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [*redis_server_command(port, str(data_dir), True), "--appendfsync", "always"]
    return Process("redis", command, dict(os.environ), data_dir / "redis.log",
                   ready=lambda: listening(port))  # fmt: skip


class PostgresCluster:
    """A PostgreSQL cluster of the soak's own (initdb, pg_ctl), so that it may be restarted. As
    root, it runs as the ``postgres`` user, since PostgreSQL refuses to run as root."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.bin = Path(shutil.which("pg_ctl") or "pg_ctl").resolve().parent

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresCluster:
        self.data_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            self.data_dir.parent.chmod(0o755)  # mkdtemp's 0700 would keep the postgres user out
            shutil.chown(self.data_dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U",
                  "postgres")  # fmt: skip
        return self.start()

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        self._run(str(self.bin / "pg_ctl"), action, "-D", str(self.data_dir), "-w",
                  "-l", str(self.data_dir / "server.log"), "-o", options, *extra)  # fmt: skip

    def start(self) -> PostgresCluster:
        self._pg_ctl("start")
        return self

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("stop", "-m", "immediate")


class SpoolDisk:
    """The spool's own small disk: a tmpfs mounted for the run, which ``fill`` fills up. Where
    mounting is not allowed (not root, a container without the capability) the spool is a
    plain directory and filling it is skipped, which the report says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        size = f"size={SPOOL_DISK_BYTES}"
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(path)],
                                 capture_output=True)  # fmt: skip
        self.mounted = mounted.returncode == 0
        self.filler = path / "filler"

    def fill(self) -> int:
        """Fill what is left of the disk; returns the bytes written."""
        if not self.mounted:
            return 0
        written = 0
        with contextlib.suppress(OSError), self.filler.open("wb") as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
                written += 65536
        return written

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@dataclass
class Delivery:
    webhook_id: str
    body_hash: str
    answered: int


@dataclass
class Sink:
    """The user's endpoint: keeps every request's ``webhook-id`` and body, and answers as its
    ``mode`` says: ok, slow (3 s, then 200), down (drops the connection), 500, 429."""

    mode: str = "ok"
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Sink:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/tavus"

    def stop(self) -> None:
        self.server.shutdown()

    def delivered(self) -> dict[str, Counter[str]]:
        """For each webhook-id, the bodies answered 2xx (hash -> count)."""
        found: dict[str, Counter[str]] = defaultdict(Counter)
        with self.lock:
            for delivery in self.received:
                if 200 <= delivery.answered < 300:
                    found[delivery.webhook_id][delivery.body_hash] += 1
        return found

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = sink.mode
                if mode == "down":
                    self.close_connection = True
                    return
                if mode == "slow":
                    time.sleep(3)
                status = {"500": 500, "429": 429}.get(mode, 200)
                with sink.lock:
                    sink.received.append(
                        Delivery(self.headers.get("webhook-id", ""), body_hash(body), status)
                    )
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "2")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        return Handler


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def procfile_commands(port: int, schedule: Path) -> dict[str, list[str]]:
    """web, worker and beat as the Procfile's lines, run from this interpreter."""
    from cli.dev import process_commands

    commands = process_commands(port, 2, schedule.parent, beat=True)
    return {name: shlex.split(line) for name, line in commands.items()}
