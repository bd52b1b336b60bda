"""Real services for the tests, each started on a free port and stopped afterwards.

Helpers, not fixtures, so that fault tests can start, kill and restart them at will.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

# One home for what dev, the tests and the benchmark share (free ports, the redis-server binary,
# a worker's command line); re-exported here, where the tests have always found them.
from cli.services import (
    free_port,
    listening,
    redis_server_binary,
    redis_server_command,
    worker_command,
)

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
        self.extra: list[str] = []  # more redis-server options (--replicaof ...)
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [
            *redis_server_command(self.port, str(self.data_dir), self.appendonly),
            "--appendfsync", "always", *self.extra,
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

    def start(self, ready_timeout: float = 30, wait: bool = True) -> Service:
        """Start the process and, unless ``wait`` is false, wait until it is ready."""
        self.log_path.touch()
        offset = self.log_path.stat().st_size  # a restart appends: look at what is new only
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

        if not wait:
            return self

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
        include: tuple[str, ...] = (),
        heartbeat: bool = False,
    ) -> None:
        super().__init__(env, log_path)
        self.concurrency = concurrency
        self.queues = queues  # leave a queue out to find its messages waiting in Redis
        self.include = include  # test-only modules the worker imports (tests/bugs)
        # Heartbeats on, as the Procfile's worker has them: a monitor (Flower) sees the worker
        # and can turn its task events on (Celery has no event dispatcher to turn on without).
        self.heartbeat = heartbeat

    def command(self) -> list[str]:
        extra = ["--include", ",".join(self.include)] if self.include else []
        command = [*worker_command(self.queues, self.concurrency, name="test"), *extra]
        if self.heartbeat:
            command.remove("--without-heartbeat")
        return command

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

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        workers: int = 2,
        app: str = "receiver.wsgi:app",  # or deploy.wsgi:app (the Procfile's web), a test's own
    ) -> None:
        super().__init__({**env, "WEB_CONCURRENCY": str(workers)}, log_path)
        self.port = free_port()
        self.app = app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{self.port}", self.app,
        ]  # fmt: skip

    def ready(self, new_output: bytes) -> bool:
        return new_output.count(b"Worker serving") >= int(self.env["WEB_CONCURRENCY"]) and (
            listening(self.port)
        )


def procfile() -> dict[str, tuple[dict[str, str], list[str]]]:
    """The Procfile, each process as its ``VAR=value`` prefix and its argv."""
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, command = line.split(":", 1)
        words = shlex.split(command)
        prefix = {}
        while "=" in words[0]:
            key, value = words.pop(0).split("=", 1)
            prefix[key] = value
        lines[name] = (prefix, words)
    return lines


def base_env(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CELERY_")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    # Each environment gets a spool of its own: a web process draining another test's spool
    # would publish that test's events into the wrong Redis.
    env["SPOOL_DIR"] = tempfile.mkdtemp(prefix="tavus-spool-")
    env.update(overrides)
    return env


class Prometheus(Service):
    """Debian's prometheus server, scraping ``targets`` (job name -> scrape config) every second,
    its data in a folder of the test's. Queried through its HTTP API, as a dashboard would."""

    def __init__(
        self,
        work_dir: Path,
        scrape_configs: list[dict[str, Any]],
        rule_files: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(dict(os.environ), work_dir / "prometheus.log")
        self.port = free_port()
        self.work_dir = work_dir
        self.config = work_dir / "prometheus.yml"
        global_ = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        config = {
            "global": global_,
            "scrape_configs": scrape_configs,
            "rule_files": [str(path) for path in rule_files],
        }
        self.config.write_text(json.dumps(config))  # JSON is YAML: no YAML writer needed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            PROMETHEUS_BINARY, f"--config.file={self.config}",
            f"--storage.tsdb.path={self.work_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]  # fmt: skip

    def ready(self, new_output: bytes) -> bool:
        return b"Server is ready to receive web requests" in new_output

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of an instant query (None when it has no result)."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def series(self, promql: str, start: float, end: float) -> list[float]:
        """One series' values between ``start`` and ``end``, a point a second."""
        params = {"query": promql, "start": start, "end": end, "step": "1s"}
        answer = requests.get(f"{self.url}/api/v1/query_range", params=params, timeout=5)
        answer.raise_for_status()
        result = answer.json()["data"]["result"]
        return [float(value) for _, value in result[0]["values"]] if result else []

    def wait_for(self, promql: str, expected: float, timeout: float = 60) -> float:
        """Poll until ``promql`` evaluates to ``expected``; fail with the last value seen."""
        seen: list[float | None] = [None]

        def reached() -> bool:
            seen[0] = self.value(promql)
            return seen[0] == expected

        try:
            wait_until(reached, timeout, interval=0.5)
        except TimeoutError:
            raise AssertionError(f"{promql} = {seen[0]}, expected {expected}") from None
        return expected


PROMETHEUS_BINARY = "/usr/bin/prometheus"  # Debian's package, installed by scripts/test


class Flower(Service):
    """Flower from PyPI, on our Celery app and the test's Redis, behind basic auth."""

    def __init__(self, env: dict[str, str], log_path: Path, basic_auth: str) -> None:
        super().__init__(env, log_path)
        self.port = free_port()
        self.basic_auth = basic_auth

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "flower",
            f"--port={self.port}", "--address=127.0.0.1", f"--basic-auth={self.basic_auth}",
            "--inspect_timeout=5000",  # ms; a loaded machine answers slowly
        ]  # fmt: skip

    def ready(self, new_output: bytes) -> bool:
        return listening(self.port)


class CuttableProxy:
    """A TCP proxy in front of a server (PostgreSQL) that a test can cut and restore: cut, every
    connection through it is dropped and new ones are refused, as when the server's host goes
    away; restored, it listens on the same port again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> CuttableProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def stop(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class SentinelGroup:
    """A Redis primary, its replica and three sentinels (quorum 2), all private processes, as a
    managed Redis with failover runs them. Sentinels declare the primary down after one second
    of silence; ``kill_primary`` SIGKILLs whichever node is the primary now."""

    MASTER = "tavus"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes = [RedisServer(directory / name) for name in ("a", "b")]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelGroup:
        primary, replica = self.nodes
        primary.start()
        replica.extra = ["--replicaof", "127.0.0.1", str(primary.port)]
        replica.start()
        wait_until(lambda: self.node(replica).info("replication")["master_link_status"] == "up")
        for port in self.sentinel_ports:
            self.sentinels.append(self._sentinel(port, primary.port))
        wait_until(lambda: len(self._sentinel_view("sentinels")) == 2, timeout=20)
        wait_until(lambda: len(self._sentinel_view("replicas")) == 1, timeout=20)
        return self

    def _sentinel(self, port: int, primary_port: int) -> subprocess.Popen[bytes]:
        config = self.directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {self.MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
            f"sentinel failover-timeout {self.MASTER} 5000\n"
        )
        log = (self.directory / f"sentinel-{port}.log").open("ab")
        process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"], stdout=log, stderr=log
        )
        wait_until(lambda: listening(port))
        return process

    def _sentinel_view(self, what: str) -> list[Any]:
        import redis

        with redis.Redis(port=self.sentinel_ports[0], decode_responses=True) as client:
            return client.execute_command(f"SENTINEL {what.upper()}", self.MASTER)

    def primary_port(self) -> int:
        import redis

        with redis.Redis(port=self.sentinel_ports[0], decode_responses=True) as client:
            return int(client.sentinel_get_master_addr_by_name(self.MASTER)[1])

    def node(self, server: RedisServer) -> Any:
        import redis

        return redis.Redis(port=server.port, socket_timeout=5)

    def primary(self) -> RedisServer:
        port = self.primary_port()
        return next(node for node in self.nodes if node.port == port)

    def replica(self) -> RedisServer:
        port = self.primary_port()
        return next(node for node in self.nodes if node.port != port)

    def cut_replica(self) -> RedisServer:
        """Cut the replica off the primary, as a partition would: it is paused and its link
        dropped, so that the primary's writes from now on reach no replica (what it had sent
        before is still in the replica's socket). ``SIGCONT`` it to heal."""
        replica = self.replica()
        replica.process.send_signal(signal.SIGSTOP)
        self.node(self.primary()).client_kill_filter(_type="replica")
        return replica

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary; returns it, to bring back with ``start`` (as a replica)."""
        primary = self.primary()
        primary.stop(signal.SIGKILL)
        return primary

    def wait_for_failover(self, old: RedisServer, timeout: float = 30) -> RedisServer:
        wait_until(lambda: self.primary_port() != old.port, timeout=timeout, interval=0.2)
        return self.primary()

    def rejoin(self, old: RedisServer) -> None:
        """Bring a killed node back as the current primary's replica, as a restarted node is
        (sentinels would reconfigure it too, a few seconds later); wait until it is in sync."""
        old.extra = ["--replicaof", "127.0.0.1", str(self.primary_port())]
        old.start()
        wait_until(lambda: self.node(old).info("replication")["master_link_status"] == "up", 30)

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(timeout=10)
        for node in self.nodes:
            node.stop(signal.SIGKILL)
