"""A multi-host deployment on one machine: every host a network namespace with a CPU quota
(``tests/cluster/hosts.py``), every process the Procfile's own line or the real server.

| host | address | runs |
| --- | --- | --- |
| lb | 10.77.0.10 | Debian's haproxy, health-checking `/readyz`, retrying on another web host |
| web1, web2 | .11, .12 | the Procfile's `web` (gunicorn, deploy/gunicorn.conf.py) |
| worker1..3 | .31-.33 | the Procfile's `worker` (Celery, REMAP_SIGTERM=SIGQUIT) |
| redis | .20 | redis-server with deploy/redis.conf (the primary) |
| postgres | .21 | PostgreSQL from /usr/lib/postgresql, initdb'd for the run |
| destination | .40 | an HTTP server the workers forward every event to |

The test process is "Tavus": it posts from the root namespace (.1, the bridge) to the balancer.
Sentinel and a Redis replica come later (issue 20, items 1-2): they take ``.22`` (the replica)
and sentinels on the redis, redis-replica and postgres hosts, port 26379; ``LAYOUT`` has room.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import redis

from schemas.messages import QUEUES
from tests.cluster.hosts import SUBNET, Host, Network, network_lock
from tests.services import ROOT, base_env, procfile, wait_until
from workers.store.db import Store

TOKEN = "cluster-token-0123456789abcdef"
WEB_PORT = 8000
LB_PORT = 80
REDIS_PORT = 6379
POSTGRES_PORT = 5432
DESTINATION_PORT = 8080

# host name -> last octet of its address
LAYOUT = {
    "lb": 10,
    "web1": 11,
    "web2": 12,
    "redis": 20,
    "postgres": 21,
    "worker1": 31,
    "worker2": 32,
    "worker3": 33,
    "destination": 40,
}
WEB_HOSTS = ("web1", "web2")
WORKER_HOSTS = ("worker1", "worker2", "worker3")


@dataclass(frozen=True)
class Sizing:
    """What each host gets. App hosts (web, worker) share one quota, as dynos of one size do;
    the others get a whole core so that they are never what a measurement measures."""

    app_cpus: float = 0.25
    infra_cpus: float = 1.0
    web_concurrency: int = 2  # WEB_CONCURRENCY
    worker_concurrency: int = 2  # CELERY_WORKER_CONCURRENCY
    # Short, so that a dead host's messages come back within a test; the broker's default is 900.
    visibility_timeout: int = 10


@dataclass
class Started:
    host: Host
    process: subprocess.Popen[bytes]
    log: Path
    offset: int  # where this start's output begins in the log

    def output(self) -> bytes:
        return self.log.read_bytes()[self.offset :]


@dataclass
class Cluster:
    sizing: Sizing = field(default_factory=Sizing)
    network: Network = field(default_factory=Network)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tcl-")))
    running: dict[str, list[Started]] = field(default_factory=dict)

    # --- building it ------------------------------------------------------------------------

    def open(self) -> Cluster:
        self.work.chmod(0o755)  # PostgreSQL runs as its own user
        self.network.open()
        app = {*WEB_HOSTS, *WORKER_HOSTS}
        for name, octet in LAYOUT.items():
            cpus = self.sizing.app_cpus if name in app else self.sizing.infra_cpus
            self.network.add(name, octet, cpus)
        self.start_redis()
        self.start_postgres()
        self.start_destination()
        Store(self.database_url).upgrade()  # the Procfile's release, from outside
        for name in WEB_HOSTS:
            self.start_web(name)
        self.start_balancer()
        return self

    def close(self) -> None:
        try:
            self.network.close()
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    def address(self, name: str) -> str:
        return f"{SUBNET}.{LAYOUT[name]}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.address('redis')}:{REDIS_PORT}/0"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{self.address('postgres')}:{POSTGRES_PORT}/postgres"

    @property
    def intake(self) -> tuple[str, int]:
        return self.address("lb"), LB_PORT

    def app_env(self, host: str, **extra: str) -> dict[str, str]:
        secret = "whsec_" + base64.b64encode(b"cluster-destination-secret-0123").decode()
        env = base_env(
            CALLBACK_TOKENS=TOKEN,
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            VISIBILITY_TIMEOUT_SECONDS=str(self.sizing.visibility_timeout),
            FORWARD_APP_URL=f"http://{self.address('destination')}:{DESTINATION_PORT}/tavus",
            FORWARD_APP_SECRET=secret,
            TRUSTED_PROXIES="1",  # haproxy appends X-Forwarded-For
            # The intake alone, as a deployment that routes the console separately runs it: the
            # console's imports would double every web process's start under a quarter core.
            CONSOLE_ENABLED="false",
            SPOOL_DIR=str(self.work / host / "spool"),
            PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        )
        env.update(extra)
        return env

    def run(
        self, name: str, command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> Started:
        log = self.work / name / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        offset = log.stat().st_size
        with log.open("ab") as out:
            process = self.host(name).run(command, env or dict(os.environ), out, cwd=cwd)
        started = Started(self.host(name), process, log, offset)
        self.running.setdefault(name, []).append(started)
        return started

    def wait_ready(
        self, started: Started, marker: bytes, count: int = 1, timeout: float = 120
    ) -> None:
        def ready() -> bool:
            if started.process.poll() is not None:
                tail = started.output()[-3000:].decode(errors="replace")
                raise RuntimeError(f"{started.host.name} died at start:\n{tail}")
            return started.output().count(marker) >= count

        wait_until(ready, timeout, interval=0.2)

    # --- the hosts' servers -----------------------------------------------------------------

    def start_redis(self) -> None:
        data = self.work / "redis" / "data"
        data.mkdir(parents=True)
        command = [
            "redis-server", str(ROOT / "deploy" / "redis.conf"),
            "--bind", self.address("redis"), "--port", str(REDIS_PORT),
            "--dir", str(data), "--save", "", "--protected-mode", "no",
        ]  # fmt: skip
        started = self.run("redis", command)
        self.wait_ready(started, b"Ready to accept connections")

    def start_postgres(self) -> None:
        binaries = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
        data = self.work / "postgres" / "data"
        data.mkdir(parents=True)
        shutil.chown(data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_postgres, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U",
             "postgres", "-E", "UTF8"],
            check=True, capture_output=True, cwd=data,
        )  # fmt: skip
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        command = [
            *as_postgres, str(binaries / "postgres"), "-D", str(data),
            "-c", f"listen_addresses={self.address('postgres')}", "-p", str(POSTGRES_PORT),
            "-c", f"unix_socket_directories={data}", "-c", "max_connections=200",
        ]  # fmt: skip
        started = self.run("postgres", command, cwd=data)
        self.wait_ready(started, b"ready to accept connections")

    def start_destination(self) -> None:
        command = [
            sys.executable, "-m", "tests.cluster.destination",
            self.address("destination"), str(DESTINATION_PORT), str(self.received_log),
        ]  # fmt: skip
        started = self.run("destination", command, env=base_env())
        self.wait_ready(started, b"destination listening")

    @property
    def received_log(self) -> Path:
        return self.work / "destination" / "received.jsonl"

    def start_web(self, name: str) -> Started:
        prefix, argv = procfile()["web"]
        env = self.app_env(
            name,
            **prefix,
            PORT=str(WEB_PORT),
            WEB_CONCURRENCY=str(self.sizing.web_concurrency),
        )
        started = self.run(name, argv, env)
        self.wait_ready(started, b"Worker serving", count=self.sizing.web_concurrency)
        return started

    def start_worker(self, name: str) -> Started:
        prefix, argv = procfile()["worker"]
        env = self.app_env(
            name, **prefix, CELERY_WORKER_CONCURRENCY=str(self.sizing.worker_concurrency)
        )
        started = self.run(name, argv, env)
        self.wait_ready(started, b"ready.")
        return started

    def stop(self, name: str, timeout: float = 40) -> None:
        """SIGTERM, as a platform stops a dyno (the worker's soft shutdown), then wait."""
        for started in self.running.pop(name, []):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.process.pid, signal.SIGTERM)
            try:
                started.process.wait(timeout)
            except subprocess.TimeoutExpired:
                started.host.kill_all()

    def vanish(self, name: str) -> None:
        """The host is gone: every process SIGKILLed, its cable pulled."""
        self.host(name).kill_all()
        self.host(name).link(up=False)
        self.running.pop(name, None)

    def start_balancer(self) -> None:
        config = self.work / "lb" / "haproxy.cfg"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(self.haproxy_config())
        started = self.run("lb", ["haproxy", "-db", "-f", str(config)])
        wait_until(lambda: self.balancer_up(started), 60, interval=0.2)

    def haproxy_config(self) -> str:
        servers = "\n".join(
            f"    server {name} {self.address(name)}:{WEB_PORT}" for name in WEB_HOSTS
        )
        return f"""\
global
    stats socket {self.admin_socket} mode 600 level admin
    maxconn 4000

defaults
    mode http
    option forwardfor
    timeout connect 1s
    timeout client 30s
    timeout server 3s
    timeout check 1s
    # A request whose web host died before answering goes to another one. A POST is safe to
    # send twice: the intake's idempotency key answers the copy "duplicate", 200.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend intake
    bind {self.address("lb")}:{LB_PORT}
    default_backend web

backend web
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
{servers}
"""

    @property
    def admin_socket(self) -> Path:
        return self.work / "lb" / "admin.sock"

    def balancer(self, command: str) -> str:
        """One command on haproxy's runtime API (``disable server web/web2``...)."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.admin_socket))
            admin.sendall(command.encode() + b"\n")
            return admin.makefile().read()

    def balancer_up(self, started: Started) -> bool:
        if started.process.poll() is not None:
            raise RuntimeError(f"haproxy died:\n{started.output().decode(errors='replace')}")
        if not self.admin_socket.exists():
            return False
        states = self.balancer("show servers state web")
        return states.count(" 2 ") >= len(WEB_HOSTS)  # srv_op_state 2: running

    def serving(self, names: tuple[str, ...]) -> None:
        """Route to ``names`` only (haproxy's maintenance mode for the other web hosts)."""
        for name in WEB_HOSTS:
            verb = "enable" if name in names else "disable"
            self.balancer(f"{verb} server web/{name}")
        wait_until(lambda: self.routed_to() == set(names), 30, interval=0.2)

    def routed_to(self) -> set[str]:
        """The web hosts haproxy sends requests to: up and not in maintenance."""
        lines = self.balancer("show servers state web").splitlines()[2:]
        fields = [line.split() for line in lines if line.strip()]
        return {f[3] for f in fields if f[5] == "2" and f[6] == "0"}

    # --- looking inside ---------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5)

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def backlog(self) -> dict[str, int]:
        """What waits in Redis: every queue's length, and messages taken but never acked."""
        client = self.redis()
        with client:
            found = {queue: client.llen(queue) for queue in QUEUES}
            found["unacked"] = client.hlen("unacked")
        return found

    def spooled(self) -> int:
        return sum(len(list((self.work / n / "spool").glob("*"))) for n in WEB_HOSTS)

    def tail(self, lines: int = 30) -> str:
        """The end of every host's log, for a failure message."""
        parts = []
        for log in sorted(self.work.glob("*/*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)


@contextlib.contextmanager
def cluster(sizing: Sizing | None = None, report: IO[str] | None = None):
    """A running cluster, removed afterwards whatever happened (the hosts' logs are printed to
    ``report`` when the block failed)."""
    with network_lock():
        built = Cluster(sizing or Sizing())
        try:
            yield built.open()
        except BaseException:
            if report is not None:
                print(built.tail(), file=report)
            raise
        finally:
            built.close()
