"""A multi-host deployment on one machine: every host a network namespace with a CPU quota
(``tests/cluster/hosts.py``), every process the Procfile's own line or the real server.

| host | address | runs |
| --- | --- | --- |
| lb | 10.77.0.10 | Debian's haproxy, health-checking `/readyz`, retrying on another web host |
| web1, web2 | .11, .12 | the Procfile's `web` (gunicorn, deploy/gunicorn.conf.py) |
| worker1..3 | .31-.33 | the Procfile's `worker` (Celery, REMAP_SIGTERM=SIGQUIT) |
| beat | .30 | the Procfile's `beat` (the purge, every minute) |
| redis1, redis2 | .20, .22 | redis-server with deploy/redis.conf: redis1 the primary at the start,
  redis2 its replica; a sentinel on each (port 26379) |
| postgres | .21 | PostgreSQL from /usr/lib/postgresql, initdb'd for the run; the third sentinel |
| destination | .40 | an HTTP server the workers forward every event to |

Every process of ours finds Redis through the three sentinels (``REDIS_SENTINELS``, quorum 2)
and acknowledges only what the replica holds too (``REDIS_MIN_REPLICAS=1``). The test process
is "Tavus": it posts from the root namespace (.1, the bridge) to the balancer.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import redis
from redis.sentinel import Sentinel

from receiver.spool import REJECTED
from schemas.messages import PURGE, QUEUES
from schemas.spool_files import spooled_files
from tests.cluster.hosts import SUBNET, Host, Network, network_lock
from tests.services import ROOT, base_env, procfile, wait_until
from workers.store.db import Store

TOKEN = "cluster-token-0123456789abcdef"
WEB_PORT = 8000
LB_PORT = 80
REDIS_PORT = 6379
SENTINEL_PORT = 26379
SENTINEL_MASTER = "tavus"
POSTGRES_PORT = 5432
DESTINATION_PORT = 8080

# host name -> last octet of its address
LAYOUT = {
    "lb": 10,
    "web1": 11,
    "web2": 12,
    "redis1": 20,
    "postgres": 21,
    "redis2": 22,
    "beat": 30,
    "worker1": 31,
    "worker2": 32,
    "worker3": 33,
    "destination": 40,
}
WEB_HOSTS = ("web1", "web2")
WORKER_HOSTS = ("worker1", "worker2", "worker3")
REDIS_HOSTS = ("redis1", "redis2")  # the primary at the start, its replica
SENTINEL_HOSTS = ("redis1", "redis2", "postgres")


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
    # How long the sentinels wait before they call the primary down: a few seconds, as the docs
    # advise (shorter fails over on a blip; this machine is shared and its load spikes).
    down_after_ms: int = 3000


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
        app = {*WEB_HOSTS, *WORKER_HOSTS, "beat"}
        for name, octet in LAYOUT.items():
            cpus = self.sizing.app_cpus if name in app else self.sizing.infra_cpus
            self.network.add(name, octet, cpus)
        primary, replica = REDIS_HOSTS
        self.start_redis(primary)
        self.start_redis(replica, replica_of=primary)
        self.start_postgres()
        self.start_sentinels()
        self.start_destination()
        Store(self.database_url).upgrade()  # the Procfile's release, from outside
        with ThreadPoolExecutor(len(WEB_HOSTS)) as pool:  # hosts of their own: side by side
            list(pool.map(self.start_web, WEB_HOSTS))
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
        # Only its db applies: with REDIS_SENTINELS the sentinels say where the primary is.
        return f"redis://{self.address(REDIS_HOSTS[0])}:{REDIS_PORT}/0"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(self.address(name), SENTINEL_PORT) for name in SENTINEL_HOSTS]

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
            REDIS_SENTINELS=",".join(f"{host}:{port}" for host, port in self.sentinels),
            REDIS_SENTINEL_MASTER=SENTINEL_MASTER,
            REDIS_MIN_REPLICAS="1",
            DATABASE_URL=self.database_url,
            VISIBILITY_TIMEOUT_SECONDS=str(self.sizing.visibility_timeout),
            FORWARD_APP_URL=f"http://{self.address('destination')}:{DESTINATION_PORT}/tavus",
            FORWARD_APP_SECRET=secret,
            TRUSTED_PROXIES="1",  # haproxy appends X-Forwarded-For
            # The intake alone, as a deployment that routes the console separately runs it.
            CONSOLE_ENABLED="false",
            SPOOL_DIR=str(self.work / host / "spool"),
            PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        )
        env.update(extra)
        return env

    def run(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        label: str | None = None,
    ) -> Started:
        """Start ``command`` on host ``name``; its output goes to ``<label or name>.log``."""
        log = self.work / name / f"{label or name}.log"
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

    def start_redis(self, name: str, replica_of: str | None = None) -> Started:
        """redis-server on host ``name`` with deploy/redis.conf (a copy: the sentinels rewrite a
        node's configuration when they reconfigure it), keeping its append-only file across
        restarts, as a node's disk does."""
        config, data = self.work / name / "redis.conf", self.work / name / "data"
        if not config.exists():
            data.mkdir(parents=True)
            shutil.copy(ROOT / "deploy" / "redis.conf", config)
        command = [
            "redis-server", str(config), "--bind", self.address(name), "--port", str(REDIS_PORT),
            "--dir", str(data), "--save", "", "--protected-mode", "no",
        ]  # fmt: skip
        if replica_of:
            command += ["--replicaof", self.address(replica_of), str(REDIS_PORT)]
        started = self.run(name, command, label="redis")
        self.wait_ready(started, b"Ready to accept connections")
        if replica_of:
            node = self.redis_node(name)
            wait_until(lambda: node.info("replication")["master_link_status"] == "up", 60)
        return started

    def start_sentinels(self) -> None:
        """A sentinel on each of ``SENTINEL_HOSTS``, monitoring the first Redis host (quorum 2),
        then wait until each knows the other two and the replica: a failover needs them."""
        primary = self.address(REDIS_HOSTS[0])
        for name in SENTINEL_HOSTS:
            folder = self.work / name / "sentinel"
            folder.mkdir(parents=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {SENTINEL_PORT}\nbind {self.address(name)}\nprotected-mode no\n"
                f"dir {folder}\n"
                f"sentinel monitor {SENTINEL_MASTER} {primary} {REDIS_PORT} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {self.sizing.down_after_ms}\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
            )
            command = ["redis-server", str(config), "--sentinel"]
            self.wait_ready(self.run(name, command, label="sentinel"), b"+monitor master")

        def known() -> bool:
            for host, port in self.sentinels:
                with redis.Redis(host, port, socket_timeout=5, decode_responses=True) as one:
                    others = one.execute_command("SENTINEL SENTINELS", SENTINEL_MASTER)
                    replicas = one.execute_command("SENTINEL REPLICAS", SENTINEL_MASTER)
                if len(others) < len(SENTINEL_HOSTS) - 1 or len(replicas) < 1:
                    return False
            return True

        wait_until(known, 60, interval=0.5)

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

    def start_beat(self, name: str = "beat") -> Started:
        """The Procfile's beat, its schedule file on its own host's disk, sending the purge (a
        retention of 30 days, which removes nothing here) every minute, its shortest period."""
        prefix, argv = procfile()["beat"]
        schedule = self.work / name / "celerybeat-schedule"
        argv = [str(schedule) if word.endswith("celerybeat-schedule") else word for word in argv]
        env = self.app_env(name, **prefix, RETENTION_DAYS="30", PURGE_INTERVAL_SECONDS="60")
        started = self.run(name, argv, env)
        self.wait_ready(started, b"beat: Starting")
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

    def kill(self, name: str, label: str) -> None:
        """SIGKILL one server of host ``name`` (its log's ``label``), the others left running."""
        for started in [s for s in self.running.get(name, []) if s.log.stem == label]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started.process.pid, signal.SIGKILL)
            started.process.wait(10)
            self.running[name].remove(started)

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
        """A client of the primary the sentinels name now, as our processes find it."""
        sentinels = Sentinel(self.sentinels, socket_timeout=5)
        return sentinels.master_for(SENTINEL_MASTER, socket_timeout=5)

    def redis_node(self, name: str) -> redis.Redis:
        """A client of the Redis node on host ``name``, whatever its role."""
        return redis.Redis(self.address(name), REDIS_PORT, socket_timeout=5)

    def redis_primary(self) -> str:
        """The host whose node the sentinels (the first that answers) name the primary."""
        for host, port in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                with redis.Redis(host, port, socket_timeout=2, decode_responses=True) as one:
                    address, _ = one.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
                return next(name for name in REDIS_HOSTS if self.address(name) == address)
        raise RuntimeError("no sentinel answers")

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

    def purges_done(self) -> int:
        """How many purges (beat's task here) the worker hosts have finished so far."""
        done = f"Task {PURGE}[".encode()
        count = 0
        for name in WORKER_HOSTS:
            log = self.work / name / f"{name}.log"
            if log.exists():
                count += sum(
                    1
                    for line in log.read_bytes().splitlines()
                    if done in line and b"succeeded" in line
                )
        return count

    def spooled(self) -> int:
        """Events in the web hosts' spools, waiting or rejected (not the drain's lock file)."""
        spools = [self.work / name / "spool" for name in WEB_HOSTS]
        return sum(len(spooled_files(s)) + len(list((s / REJECTED).glob("*"))) for s in spools)

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
