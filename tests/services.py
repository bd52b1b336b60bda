"""Real services for the tests, each started on a free port and stopped afterwards.

Helpers, not fixtures, so that fault tests can start, kill and restart them at will.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One home for what dev, the tests and the benchmark share (free ports, the redis-server binary,
# a worker's command line); re-exported here, where the tests have always found them.
from cli.services import free_port, listening, redis_server_command, worker_command

__all__ = ["free_port", "listening"]

ROOT = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server; ``stop``/``start`` keep its port and data directory."""

    def __init__(self, data_dir: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [
            *redis_server_command(self.port, str(self.data_dir), self.appendonly),
            "--appendfsync", "always",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port), timeout=10)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None


class Service:
    """A real process in its own session, so a signal reaches it and its children, as on Heroku."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self, new_output: bytes) -> bool:
        raise NotImplementedError

    def start(self, ready_timeout: float = 30) -> Service:
        self.log_path.touch()
        offset = self.log_path.stat().st_size  # a restart appends: look at what is new only
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

        def up() -> bool:
            return self._died() or self.ready(self.log_path.read_bytes()[offset:])

        wait_until(up, ready_timeout)
        if self._died():
            raise RuntimeError(f"{self.command()[2:4]} died at start:\n{self.output()[-3000:]}")
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def signal_all(self, sig: int) -> None:
        """Send ``sig`` to every process of the group (parent and children)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal the whole process group; SIGKILL after timeout."""
        if self.process is None:
            return
        self.signal_all(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()
        self.process = None


class Worker(Service):
    """A real Celery worker process (``celery -A workers.celery_app worker``), not eager mode."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        queues: str = "events,storage,alerts",
    ) -> None:
        super().__init__(env, log_path)
        self.concurrency = concurrency
        self.queues = queues  # leave a queue out to find its messages waiting in Redis

    def command(self) -> list[str]:
        return worker_command(self.queues, self.concurrency, name="test")

    def ready(self, new_output: bytes) -> bool:
        return b"ready." in new_output


class Beat(Service):
    """``celery beat``, the Procfile's scheduler, with its schedule file in the test's folder."""

    def command(self) -> list[str]:
        schedule = self.log_path.with_suffix(".schedule")
        return [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat",
            "--loglevel", "INFO", "--schedule", str(schedule),
        ]  # fmt: skip

    def ready(self, new_output: bytes) -> bool:
        return b"beat: Starting..." in new_output


class Web(Service):
    """The receiver under real gunicorn with deploy/gunicorn.conf.py, as the Procfile runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2) -> None:
        super().__init__({**env, "WEB_CONCURRENCY": str(workers)}, log_path)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{self.port}", "receiver.wsgi:app",
        ]  # fmt: skip

    def ready(self, new_output: bytes) -> bool:
        return new_output.count(b"Booting worker") >= int(self.env["WEB_CONCURRENCY"]) and (
            listening(self.port)
        )


def base_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CELERY_")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    # Each environment gets a spool of its own: a web process draining another test's spool
    # would publish that test's events into the wrong Redis.
    env["SPOOL_DIR"] = tempfile.mkdtemp(prefix="tavus-spool-")
    env.update(overrides)
    return env
