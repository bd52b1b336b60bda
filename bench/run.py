"""One benchmark run, start to finish: start the processes, measure, stop them, return figures.

Order: intake and baseline alternate under the same load (flat out, then each fixed rate), on a
Redis emptied before each run; then, per store and per worker size, the real worker starts on
the Procfile's queues (``events`` first) beside a no-op worker on five queues of its own, they
drain the same kind of messages turn by turn (each drain lasts until the follow-ups the events
sent are done too), and the biggest real worker then runs end to end.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from schemas.crypto import generate_key
from schemas.messages import EVENTS_QUEUE, QUEUES
from schemas.settings import Settings
from workers.store.db import Store
from workers.store.models import EventStatus

from . import load, netdelay, payloads, pipeline, services
from .baseline import BASELINE_QUEUE
from .load import LoadResult
from .stores import STORES, round_trip_ms, scratch_store

INTAKE_APP = "deploy.wsgi:app"  # the Procfile's web: receiver, /metrics and console
# The receiver alone without its instruments: what deploy.wsgi:app adds is the difference.
UNMETERED_APP = "bench.unmetered:create_app()"
BASELINE_APP = "bench.baseline:create_app()"
REAL_WORKER_APP = "workers.celery_app"
NOOP_WORKER_APP = "bench.noop"
SATURATION = "saturation"
ROLES = ("noop", "events")  # the no-op worker, the real one
TRACED = "traced"  # with --tracing: the intake and the real worker again, tracing on


@dataclass(frozen=True)
class Sizes:
    """How long and how much; the defaults take about three minutes on two cores."""

    seconds: float = 10.0  # each intake or baseline measure, in `slices` turns
    slices: int = 5
    rates: tuple[int, ...] = (200, 1000)  # fixed rates for ack latency, req/s
    e2e_rate: int = 200  # events/s for the end-to-end run
    e2e_seconds: float = 15.0
    events: int = 2000  # messages per worker throughput run
    processes: tuple[int, ...] = (1, 2)  # worker processes (Celery prefork concurrency)
    stores: tuple[str, ...] = STORES
    turns: int = payloads.DEFAULT_TURNS  # transcript length
    warmup_seconds: float = 2.0
    # The single-kind loads measured beside the conversations (payloads.MIXES), at saturation
    # and at the top fixed rate.
    mixes: tuple[str, ...] = payloads.MIXES[1:]
    network_delay_ms: float = 0.0  # Redis and PostgreSQL behind a delaying proxy (netdelay)
    web_concurrency: int = 0  # WEB_CONCURRENCY for every web server; 0: the deploy default
    # Celery workers per measure, each with `processes` pool processes: over a network one
    # worker's consumer (its parent process, a round trip to take and one to ack each message)
    # caps the rate whatever its pool size, and more workers (dynos) are how it scales.
    worker_instances: int = 1
    # Also the intake and the real worker with OpenTelemetry tracing on (every span sampled,
    # exported over OTLP/HTTP to `bench/otlp_sink.py`), in the same turns as without.
    tracing: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return (*ROLES, TRACED) if self.tracing else ROLES

    def workers_label(self, processes: int) -> str:
        """How a measure's workers read in the tables: x2 (one worker of two processes), or
        3 workers x2 (three of them)."""
        if self.worker_instances == 1:
            return f"x{processes}"
        return f"{self.worker_instances} workers x{processes}"


# A few seconds: every measurement once, tiny; for the smoke test, not for figures.
SMOKE = Sizes(
    seconds=1, slices=1, rates=(200,), e2e_seconds=1, events=40, processes=(1,),
    stores=("sqlite",), turns=20, warmup_seconds=0, mixes=(),
)  # fmt: skip


@dataclass
class Results:
    sizes: Sizes
    body_bytes: list[int] = field(default_factory=list)  # the templates' sizes
    intake: dict[str, LoadResult] = field(default_factory=dict)  # SATURATION or "<rate>"
    baseline: dict[str, LoadResult] = field(default_factory=dict)
    unmetered: dict[str, LoadResult] = field(default_factory=dict)  # UNMETERED_APP, same modes
    traced: dict[str, LoadResult] = field(default_factory=dict)  # INTAKE_APP, tracing on
    # The intake with ENCRYPTION_KEYS set (bodies sealed before Redis), same modes.
    encrypted: dict[str, LoadResult] = field(default_factory=dict)
    # INTAKE_APP again, acknowledging only what a replica confirms (REDIS_MIN_REPLICAS=1); and
    # how many of its requests it spooled instead (the replica did not confirm in time).
    replicated: dict[str, LoadResult] = field(default_factory=dict)
    replicated_spooled: int = 0
    # The single-kind loads: (mix, SATURATION or "<rate>") -> (intake, baseline); body sizes.
    mixes: dict[tuple[str, str], tuple[LoadResult, LoadResult]] = field(default_factory=dict)
    mix_body_bytes: dict[str, list[int]] = field(default_factory=dict)
    e2e_seconds: dict[str, list[float]] = field(default_factory=dict)  # store -> latencies, sorted
    events_per_second: dict[tuple[str, int], float] = field(default_factory=dict)
    noop_per_second: dict[tuple[str, int], float] = field(default_factory=dict)
    traced_per_second: dict[tuple[str, int], float] = field(default_factory=dict)
    spans_exported: int = 0  # what the OTLP sink received, with --tracing
    peak_rss: dict[str, int] = field(default_factory=dict)  # role -> bytes
    proxy_cpu_seconds: dict[str, float] = field(default_factory=dict)  # netdelay, per scheme
    web_workers: int = 0  # sync workers per web server
    round_trip_ms: dict[str, float] = field(default_factory=dict)  # "Redis", a store: median
    started_at: float = 0.0
    elapsed: float = 0.0


class Run:
    """Owns the run's processes; ``measure`` does everything and stops them all."""

    def __init__(
        self, sizes: Sizes, work_dir: Path, postgres_url: str, say: Callable[[str], None]
    ) -> None:
        self.sizes = sizes
        self.work_dir = work_dir
        self.postgres_url = postgres_url
        self.say = say
        self.token = secrets.token_urlsafe(24)
        self.results = Results(sizes)
        self.memory = services.MemorySampler()
        self.web_workers: dict[str, int] = {}  # url -> sync workers: connections at a fixed rate
        self.stack = ExitStack()

    def measure(self) -> Results:
        self.results.started_at = time.time()
        clock = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.stack, self.memory.running():
            self.bodies = self.work_dir / "bodies.txt"
            self.templates = payloads.write_templates(self.bodies, self.sizes.turns)
            self.results.body_bytes = [len(t) for t in self.templates]
            redis_server, direct_url = services.redis_server(
                self.work_dir, self.work_dir / "redis.log"
            )
            self.stack.callback(redis_server.stop)
            # The servers and workers reach Redis over the (delayed) network; the harness's own
            # checks go direct.
            self.redis_url = self.stack.enter_context(self._delayed(direct_url))
            # Its replica follows it over the same network, for the replicated intake.
            self._start(services.redis_replica(self.work_dir / "replica", self.redis_url))
            self.redis = redis.Redis.from_url(direct_url)
            self.stack.callback(self.redis.close)
            self._time_round_trip("Redis", self.redis_url)
            self.tracing_env = self._otlp_sink() if self.sizes.tracing else {}
            self._intake_against_baseline()
            self._mixes()
            for kind in self.sizes.stores:
                with (
                    scratch_store(kind, self.work_dir, self.postgres_url) as direct,
                    self._delayed(direct) as url,
                ):
                    self._time_round_trip(kind, url)
                    self._workers(kind, url)
            self.memory.sample()
            if self.sizes.tracing:
                self.results.spans_exported = int(requests.get(self.sink_url, timeout=5).text)
        self.results.peak_rss = dict(self.memory.peaks)
        self.results.elapsed = time.monotonic() - clock
        return self.results

    def _delayed(self, url: str) -> AbstractContextManager[str]:
        cpu = self.results.proxy_cpu_seconds
        return netdelay.delayed(url, self.sizes.network_delay_ms, self.work_dir, cpu)

    def _time_round_trip(self, name: str, url: str) -> None:
        """What the processes wait on each call, the proxy's own overhead included."""
        if name == "Redis":
            with redis.Redis.from_url(url) as client:
                took = netdelay.median_ms(client.ping)
        else:
            took = round_trip_ms(url)
        if took:
            self.results.round_trip_ms[name] = took

    def _start(self, process: services.Process) -> services.Process:
        self.stack.callback(process.stop)
        return process

    def _otlp_sink(self) -> dict[str, str]:
        """The OTLP/HTTP sink of the traced processes; the variables that point them at it."""
        port = services.free_port()
        command = [sys.executable, "-m", "bench.otlp_sink", str(port)]
        log = self.work_dir / "otlp.log"
        sink = services.Process("otlp-sink", command, services.python_env(), log)
        self._start(sink.start()).wait_ready(lambda: services.listening(port))
        self.sink_url = f"http://127.0.0.1:{port}/spans"
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",  # every span: the dearest case
        }

    def _web(self, name: str, app: str, **settings: str) -> str:
        env = services.python_env(
            REDIS_URL=self.redis_url,
            CALLBACK_TOKENS=self.token,
            SPOOL_DIR=str(self.work_dir / "spool"),  # not the checkout's
            **settings,
        )
        if self.sizes.web_concurrency:
            env["WEB_CONCURRENCY"] = str(self.sizes.web_concurrency)
        process, port = services.gunicorn(name, app, env, self.work_dir / f"{name}.log")
        self._start(process)
        self.memory.watch(f"web worker ({name})", process.children)
        url = f"http://127.0.0.1:{port}/callbacks/{self.token}"
        self.web_workers[url] = len(process.children())  # the deploy config decides
        self.results.web_workers = self.web_workers[url]
        return url

    def _load(
        self, name: str, url: str, seconds: float, rate: float = 0, bodies: Path | None = None
    ) -> LoadResult:
        out = self.work_dir / f"wrk-{name}.json"
        prefix = f"{name}-{time.time_ns()}"
        bodies = bodies or self.bodies
        result = load.run(url, bodies, out, seconds, rate, prefix, self.web_workers[url])
        result.check(202)
        pipeline.settle(self.redis, (EVENTS_QUEUE, BASELINE_QUEUE))
        return result

    def _intake_against_baseline(self) -> None:
        """Each measure in slices, intake and baseline taking turns (ABBA): a machine whose load
        drifts during the run weighs on both alike, which the ratio needs."""
        urls = {"baseline": self._web("baseline", BASELINE_APP)}
        urls["intake"] = self.intake_url = self._web("intake", INTAKE_APP)
        urls["unmetered"] = self._web("unmetered", UNMETERED_APP)
        urls["encrypted"] = self._web("encrypted", INTAKE_APP, ENCRYPTION_KEYS=generate_key())
        if self.sizes.tracing:
            urls[TRACED] = self._web(TRACED, INTAKE_APP, **self.tracing_env)
        urls["replicated"] = self._web("replicated", INTAKE_APP, REDIS_MIN_REPLICAS="1")
        for name, url in urls.items():
            if self.sizes.warmup_seconds:
                self._load(f"warmup-{name}", url, self.sizes.warmup_seconds)
        self.urls = urls
        for mode in (SATURATION, *map(str, self.sizes.rates)):
            for name, result in self._abba(mode, self.bodies, tuple(urls)).items():
                getattr(self.results, name)[mode] = result
                self.say(f"{name:8} {mode:>10}: {_load_line(result)}")
        log = (self.work_dir / "replicated.log").read_text(errors="replace")
        self.results.replicated_spooled = log.count("spooling event")

    def _abba(
        self, mode: str, bodies: Path, names: tuple[str, ...] = ("intake", "baseline")
    ) -> dict[str, LoadResult]:
        """One measure, the apps ``names`` in turns: each one's combined result."""
        seconds = self.sizes.seconds / self.sizes.slices
        rate = 0 if mode == SATURATION else float(mode)
        parts: dict[str, list[LoadResult]] = {name: [] for name in names}
        for turn in range(self.sizes.slices):
            order = list(names) if turn % 2 == 0 else list(reversed(names))
            for name in order:
                url = self.urls[name]
                parts[name].append(self._load(f"{name}-{mode}", url, seconds, rate, bodies))
                self.redis.flushall()
        return {name: LoadResult.combine(slices) for name, slices in parts.items()}

    def _mixes(self) -> None:
        """The single-kind loads, at saturation and at the top fixed rate."""
        modes = [SATURATION, *(str(max(self.sizes.rates)),) * bool(self.sizes.rates)]
        for mix in self.sizes.mixes:
            bodies = self.work_dir / f"bodies-{mix}.txt"
            lines = payloads.write_templates(bodies, self.sizes.turns, mix)
            self.results.mix_body_bytes[mix] = [len(line) for line in lines]
            for mode in modes:
                found = self._abba(mode, bodies)
                self.results.mixes[mix, mode] = found["intake"], found["baseline"]
                intake, baseline = found["intake"], found["baseline"]
                line = f"intake {_load_line(intake)}, baseline {_load_line(baseline)}"
                ratio = intake.throughput / baseline.throughput
                self.say(f"{mix:11} {mode:>10}: {line}, ratio {ratio:.2f}")

    def _workers(self, kind: str, database_url: str) -> None:
        """Worker throughput against the no-op, then end to end, on one store."""
        settings = Settings(
            callback_tokens=(self.token,),
            redis_url=self.redis_url,
            database_url=database_url,
            spool_dir=str(self.work_dir / "spool"),
            spool_drain_interval_seconds=0,  # no drainer thread in this process
        )
        # Made before any worker listens on the receiver's queue.
        messages = {
            (role, count): pipeline.made_by_receiver(
                settings, self.templates, self.sizes.events, f"w{count}{role}{kind}"
            )
            for count in self.sizes.processes
            for role in self.sizes.roles
        }
        store = Store(database_url)
        self.stack.callback(store.dispose)
        timeout = 60 + self.sizes.events / 10
        for count in self.sizes.processes:
            # One size at a time: each real worker takes the Procfile's queues, `events` first.
            workers = self._start_workers(kind, database_url, count)
            for role in self.sizes.roles:  # turn by turn, so all see the same machine
                queued = messages[role, count]
                queues = self._queues(role, count)
                rate = pipeline.drain_rate(self.redis, queues, queued, timeout)
                if role == "noop":
                    self.results.noop_per_second[kind, count] = rate
                    continue
                self._check_processed(store, f"w{count}{role}{kind}", len(queued))
                if role == TRACED:
                    self.results.traced_per_second[kind, count] = rate
                else:
                    self.results.events_per_second[kind, count] = rate
            traced = self.results.traced_per_second.get((kind, count))
            self.say(
                f"workers  {kind:>8} {self.sizes.workers_label(count)}: "
                f"{self.results.events_per_second[kind, count]:.0f} "
                f"events/s, no-op {self.results.noop_per_second[kind, count]:.0f} tasks/s"
                + (f", traced {traced:.0f} events/s" if traced is not None else "")
            )
            if count == max(self.sizes.processes):
                self._end_to_end(kind, store)
            for process in workers:
                self.memory.sample()
                process.stop()

    def _start_workers(self, kind: str, database_url: str, count: int) -> list[services.Process]:
        """This size's workers, all at once (one start-up wait), each on the queues
        ``_queues`` names."""
        env = services.python_env(
            REDIS_URL=self.redis_url, DATABASE_URL=database_url, CALLBACK_TOKENS=self.token
        )
        workers = []
        for role in self.sizes.roles:
            app = NOOP_WORKER_APP if role == "noop" else REAL_WORKER_APP
            label = "Celery worker process" + {"noop": " (no-op)", TRACED: " (tracing on)"}.get(
                role, ""
            )
            role_env = {**env, **self.tracing_env} if role == TRACED else env
            queues = ",".join(self._queues(role, count))
            for instance in range(self.sizes.worker_instances):
                name = f"worker-{kind}-{role}-{count}-{instance}"
                command = services.worker_command(queues, count, name, app=app)
                log = self.work_dir / f"{name}.log"
                process = services.Process(name, command, role_env, log)
                workers.append(self._start(process.start()))
                self.memory.watch(label, process.tree)
        for process in workers:
            process.wait_ready(lambda p=process: p.log_says("ready."))
        return workers

    def _queues(self, role: str, count: int) -> tuple[str, ...]:
        """The queues a worker consumes, its messages queued on the first. The real worker takes
        the Procfile's (``events`` first, and the follow-ups its events send: verifications,
        alerts), as in production. The no-op (and the traced worker, beside the real one) takes
        five of its own in the same order: it waits on the first as the real one waits on
        ``events``, looks at the other four as often, and each take is the same script."""
        if role == "events":
            return QUEUES
        return tuple(f"bench.{role}.{count}.{queue}" for queue in QUEUES)

    def _end_to_end(self, kind: str, store: Store) -> None:
        prefix = f"e2e{kind}"
        result = self._load(prefix, self.intake_url, self.sizes.e2e_seconds, self.sizes.e2e_rate)
        timeout = 60 + 4 * self.sizes.e2e_seconds
        latencies = pipeline.processed_latencies(store, prefix, result.statuses[202], timeout)
        self.results.e2e_seconds[kind] = latencies
        p50, p99 = (1000 * load.percentile(latencies, p) for p in (50, 99))
        self.say(f"e2e      {kind:>8}: {len(latencies)} events, p50 {p50:.1f} ms, p99 {p99:.1f} ms")

    def _check_processed(self, store: Store, prefix: str, expected: int) -> None:
        counts = pipeline.count_by_status(store, prefix)
        if counts != {EventStatus.PROCESSED: expected}:
            raise services.ServiceError(f"expected {expected} processed events, found {counts}")


def _load_line(result: LoadResult) -> str:
    line = f"{result.throughput:.0f} req/s"
    if result.latencies_ms:
        line += f", p50 {result.percentile(50):.2f} ms, p99 {result.percentile(99):.2f} ms"
    return line


def estimate(sizes: Sizes) -> float:
    """Roughly how many seconds a run takes on two cores, to say so up front."""
    # Five apps take turns on the conversations (intake, unmetered, encrypted, replicated,
    # baseline), and the traced intake with --tracing; two on each mix.
    apps = 5 + sizes.tracing
    conversations = apps * (sizes.warmup_seconds + sizes.seconds * (1 + len(sizes.rates)))
    loads = conversations + 2 * sizes.seconds * 2 * len(sizes.mixes)
    drains = len(sizes.processes) * sizes.events / 100 * (1 + sizes.tracing / 2)
    starts = 8 * len(sizes.processes)  # each size's workers start on their own
    return 15 + loads + len(sizes.stores) * (starts + sizes.e2e_seconds + drains)


def measure(
    sizes: Sizes, postgres_url: str, work_dir: Path, say: Callable[[str], None], keep: bool = False
) -> Results:
    """Run the benchmark in ``work_dir``: removed afterwards unless ``keep`` or the run failed
    (its logs say why)."""
    results = Run(sizes, work_dir, postgres_url, say).measure()
    if not keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    return results
