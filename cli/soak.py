"""``tavus-callbacks soak --minutes N --rate R --seed S``: the Procfile's processes (web, worker,
beat) under a steady load of realistic conversations, forwarded to an HTTP sink and a Python
hook, broken on a seeded schedule; at the end, what was acked is checked against what was
stored, forwarded and hooked, and resource use against its level in the first quarter.

The schedule, in the middle half of the run: SIGKILL a worker (its whole dyno), SIGKILL one web
worker (gunicorn starts another), SIGKILL and SIGTERM Redis (restarted 3 s later, AOF on),
restart PostgreSQL (its own pg_ctl cluster), make the destination slow, down, 500 and 429 with
Retry-After, fill the spool's disk (a tmpfs) for up to a minute while Redis is down. Outcomes
are read through the CLI (``events --json``, ``deliveries --json``), not the ledger's tables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import click
import orjson
import redis
import requests

from cli.render import table
from cli.services import free_port, listening
from cli.simulate import conversation_lifecycle
from cli.soak_rig import (
    ROOT,
    PostgresCluster,
    Process,
    Sink,
    SpoolDisk,
    body_hash,
    procfile_commands,
    redis_process,
)
from schemas.messages import QUEUES

TOKEN = "soak-token-0123456789abcdef0123456789"
SECRET = "whsec_c29hay1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="
FAULTS = ("kill worker", "kill web worker", "redis SIGKILL", "redis SIGTERM", "restart postgres",
          "destination slow", "destination down", "destination 500", "destination 429",
          "spool disk full")  # fmt: skip
GROWTH_ALLOWED = 0.20
SAMPLE_SECONDS = 5.0
# An event key is remembered this long in Redis (DEDUP_TTL_SECONDS, 7 days in production): its
# keys, one per event, then stay at a level after the first minute rather than growing all run
# long by design, so that Redis' growth measures leaks. Long enough for the poster's resends.
SOAK_DEDUP_TTL_SECONDS = 60
LOST = "lost"  # an attempt's outcome when its worker died before recording the answer


@dataclass
class Run:
    """What one soak did and saw, for the report."""

    minutes: float
    rate: float
    seed: int
    store: str
    done: list[tuple[float, str, str]] = field(default_factory=list)  # (at, fault, detail)
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    acked: dict[str, bytes] = field(default_factory=dict)  # event id -> the body acked
    answers: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, fault: str, detail: str = "") -> None:
        self.done.append((self.now(), fault, detail))


class Rig:
    """The running deployment: processes, Redis, store, sink, spool disk."""

    def __init__(self, run: Run, folder: Path, database_url: str | None) -> None:
        self.folder = folder
        self.postgres: PostgresCluster | None = None
        if run.store == "postgres" and not database_url:
            self.postgres = PostgresCluster(folder / "postgres").init()
            database_url = self.postgres.url
        self.database_url = database_url or f"sqlite:///{folder / 'events.db'}"
        self.spool = SpoolDisk(folder / "spool")
        self.redis_port = free_port()
        self.redis = redis_process(folder / "redis", self.redis_port)
        self.redis_lock = threading.Lock()
        self.sink = Sink().start()
        self.hook_log = folder / "hooks.log"
        self.web_port = free_port()
        self.env = self._env()
        self.processes = self._processes()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "FORWARD_"))}
        env.update({
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "DATABASE_URL": self.database_url, "CALLBACK_TOKENS": TOKEN,
            "SPOOL_DIR": str(self.spool.path), "SPOOL_DRAIN_INTERVAL_SECONDS": "2",
            # Redelivery of a killed worker's messages, and every retry, within seconds.
            "VISIBILITY_TIMEOUT_SECONDS": "30", "WORKER_SOFT_SHUTDOWN_SECONDS": "4",
            "FORWARD_SINK_URL": self.sink.url, "FORWARD_SINK_SECRET": SECRET,
            "TAVUS_HOOKS": "cli.soak_hook", "SOAK_HOOK_LOG": str(self.hook_log),
            "WEB_CONCURRENCY": "2", "CONSOLE_ENABLED": "false",
            "DEDUP_TTL_SECONDS": str(SOAK_DEDUP_TTL_SECONDS),
        })  # fmt: skip
        return env

    def _processes(self) -> dict[str, Process]:
        commands = procfile_commands(self.web_port, self.folder / "celerybeat-schedule")
        worker_env = {**self.env, "REMAP_SIGTERM": "SIGQUIT"}  # as the Procfile's worker line
        return {
            "web": Process("web", commands["web"], self.env, self.folder / "web.log",
                           ready=lambda: listening(self.web_port)),
            "worker": Process("worker", commands["worker"], worker_env,
                              self.folder / "worker.log"),
            "beat": Process("beat", commands["beat"], self.env, self.folder / "beat.log"),
        }  # fmt: skip

    def start(self) -> None:
        self.redis.start()
        release = [sys.executable, "-m", "cli.main", "db", "upgrade"]  # the Procfile's release
        subprocess.run(release, cwd=ROOT, env=self.env, check=True, capture_output=True)
        for process in self.processes.values():
            process.start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.redis.stop()
        self.sink.stop()
        if self.postgres:
            self.postgres.stop()
        self.spool.unmount()

    def broker(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=5)

    def cli(self, *args: str) -> Any:
        """A CLI command's JSON output, as an operator would read it."""
        command = [sys.executable, "-m", "cli.main", *args, "--json"]
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=300, check=True)  # fmt: skip
        return json.loads(done.stdout)

    def restart_redis(self, sig: int, down_for: float) -> None:
        with self.redis_lock:
            self.redis.stop(sig)
            time.sleep(down_for)
            self.redis.start()


# --- the load ---------------------------------------------------------------------------------


class Poster:
    """Posts conversations at a steady rate, each body again until it is acked (as Tavus
    retries), and keeps what each ack said."""

    def __init__(self, run: Run, url: str) -> None:
        self.run = run
        self.url = url
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._post_all, daemon=True)

    def bodies(self) -> Any:
        number = 0
        while True:
            for body in conversation_lifecycle(f"c-soak-{self.run.seed}-{number:06d}"):
                yield orjson.dumps(body)
            number += 1

    def _post_all(self) -> None:
        session = requests.Session()
        started = time.monotonic()
        for index, body in enumerate(self.bodies()):
            if self.stopping.is_set():
                return
            time.sleep(max(0.0, started + index / self.run.rate - time.monotonic()))
            self._post_until_acked(session, body)

    def _post_until_acked(self, session: requests.Session, body: bytes) -> None:
        while True:
            try:
                answer = session.post(self.url, data=body, timeout=15,
                                      headers={"Content-Type": "application/json"})  # fmt: skip
                outcome = str(answer.status_code)
            except requests.RequestException:
                answer, outcome = None, "no answer"
            self.run.answers[outcome] += 1
            if answer is not None and answer.status_code in (200, 202):
                self.run.acked[answer.json()["event_id"]] = body
                return
            time.sleep(0.5)


# --- the chaos --------------------------------------------------------------------------------


def schedule(run: Run, window: tuple[float, float], faults: tuple[str, ...]) -> list[Any]:
    """(at, fault) for every fault, in a seeded order, spread over ``window``; a long run
    goes round again (every fault once per ten minutes)."""
    rng = random.Random(run.seed)
    rounds = max(1, int(run.minutes // 10))
    order = [fault for _ in range(rounds) for fault in rng.sample(faults, len(faults))]
    start, end = window
    gap = (end - start) / len(order)
    return [(start + gap * (i + rng.random() * 0.5), fault) for i, fault in enumerate(order)]


class Chaos:
    def __init__(self, run: Run, rig: Rig, gap: float) -> None:
        self.run = run
        self.rig = rig
        self.lasting = max(5.0, min(30.0, gap))  # how long a destination stays broken
        self.threads: list[threading.Thread] = []

    def play(self, plan: list[tuple[float, str]]) -> None:
        for at, fault in plan:
            time.sleep(max(0.0, at - self.run.now()))
            thread = threading.Thread(target=self.do, args=(fault,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def wait(self) -> None:
        for thread in self.threads:
            thread.join()

    def do(self, fault: str) -> None:
        try:
            detail = self._act(fault)
        except Exception as exc:  # a fault that could not be made is reported, not fatal
            detail = f"could not: {type(exc).__name__}: {exc}"
        self.run.note(fault, detail)

    def _act(self, fault: str) -> str:
        rig = self.rig
        if fault == "kill worker":
            rig.processes["worker"].signal_group(signal.SIGKILL)
            rig.processes["worker"].popen.wait(10)
            time.sleep(2)
            rig.processes["worker"].start()
            return "whole dyno SIGKILLed, restarted 2 s later"
        if fault == "kill web worker":
            victim = random.Random(self.run.seed).choice(rig.processes["web"].processes()[1:])
            victim.send_signal(signal.SIGKILL)
            return f"gunicorn worker {victim.pid} SIGKILLed"
        if fault.startswith("redis"):
            sig = signal.SIGKILL if fault.endswith("SIGKILL") else signal.SIGTERM
            rig.restart_redis(sig, 3)
            return "down 3 s, restarted from its AOF"
        if fault == "restart postgres":
            if rig.postgres is None:
                return "skipped: not on a PostgreSQL cluster of the soak's own"
            rig.postgres.restart()
            return "pg_ctl restart -m fast"
        if fault.startswith("destination"):
            return self._destination(fault.split()[-1])
        return self._spool_full()

    def _destination(self, mode: str) -> str:
        self.rig.sink.mode = mode
        time.sleep(self.lasting)
        if self.rig.sink.mode == mode:
            self.rig.sink.mode = "ok"
        return f"{self.lasting:.0f} s"

    def _spool_full(self) -> str:
        spool = self.rig.spool
        if not spool.mounted:
            return "skipped: no tmpfs could be mounted (not allowed here)"
        written = spool.fill()
        lasting = min(60.0, 2 * self.lasting)
        self.rig.restart_redis(signal.SIGTERM, 10)  # the receiver must spool into a full disk
        time.sleep(lasting - 10)
        spool.empty()
        return f"tmpfs full ({written // 1024} KiB filler) {lasting:.0f} s, Redis down 10 s of it"


# --- watching resources -----------------------------------------------------------------------


def sample(run: Run, rig: Rig, until: threading.Event) -> None:
    while not until.wait(SAMPLE_SECONDS):
        levels: dict[str, float] = {}
        with contextlib.suppress(redis.RedisError):  # restarting: no sample
            levels["redis memory"] = float(rig.broker().info("memory")["used_memory"])
        for name, process in rig.processes.items():
            rss, files = process.usage()
            if rss:
                levels[f"{name} RSS"] = float(rss)
                levels[f"{name} open files"] = float(files)
        run.samples.append((run.now(), levels))


def growth(run: Run, warm: float, quarter: float, last: tuple[float, float]) -> list[Any]:
    """Each level's median at the end of the load against its median in the first quarter."""
    rows = []
    names = sorted({name for _, levels in run.samples for name in levels})
    for name in names:
        early = [lv[name] for at, lv in run.samples if warm <= at <= quarter and name in lv]
        late = [lv[name] for at, lv in run.samples if last[0] <= at <= last[1] and name in lv]
        if not early or not late:
            rows.append((name, "-", "-", "not sampled", True))
            continue
        change = median(late) / median(early) - 1
        rows.append((name, _level(name, median(early)), _level(name, median(late)),
                     f"{change:+.0%}", change <= GROWTH_ALLOWED))  # fmt: skip
    return rows


def _level(name: str, value: float) -> str:
    return f"{value:.0f}" if name.endswith("files") else f"{value / 2**20:.1f} MiB"


# --- the end ----------------------------------------------------------------------------------


def quiet(rig: Rig, timeout: float) -> float:
    """Wait until no queue, unacked message or unprocessed event is left; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            broker = rig.broker()
            queued = sum(broker.llen(queue) for queue in QUEUES) + broker.hlen("unacked")
            if not queued and not rig.cli("events", "--status", "received", "--limit", "1"):
                return time.monotonic() - started
        except (redis.RedisError, subprocess.CalledProcessError):
            pass
        time.sleep(3)
    return time.monotonic() - started


def checks(run: Run, rig: Rig) -> list[tuple[str, str, bool]]:
    events = {row["event_id"]: row for row in rig.cli("events", "--limit", "100000000")}
    deliveries = rig.cli("deliveries", "--limit", "100000000")
    acked = run.acked
    missing = [i for i in acked if i not in events]
    unprocessed = Counter(events[i]["status"] for i in acked if i in events)
    unprocessed.pop("processed", None)
    stuck = Counter(d["status"] for d in deliveries if d["status"] != "delivered")
    stuck.update(row["status"] for row in events.values() if row["status"] == "received")
    return [
        ("every acked event stored once",
         f"{len(acked)} acked, {len(missing)} missing, {len(events) - len(acked)} more stored",
         not missing and len(events) == len(acked)),
        ("every acked event processed", _counts(unprocessed) or "all", not unprocessed),
        *forward_checks(run, rig, lost_attempts(deliveries, "webhook")),
        hook_check(run, rig, lost_attempts(deliveries, "hook")),
        ("no row sending, received, pending or failed", _counts(stuck) or "none", not stuck),
    ]  # fmt: skip


def lost_attempts(deliveries: list[dict[str, Any]], kind: str) -> Counter[str]:
    """Per event, the attempts of its ``kind`` of delivery whose worker was killed before it
    recorded the answer: each may have been answered (or run) and then is made again, as
    at-least-once delivery must (the same webhook-id, for the receiver to drop)."""
    return Counter({
        row["event_id"]: sum(attempt["outcome"] == LOST for attempt in row["history"])
        for row in deliveries if row["type"] == kind
    })  # fmt: skip


def repeats(runs: dict[str, int], lost: Counter[str]) -> tuple[int, int]:
    """Repeats in all, and those no lost attempt explains."""
    again = {event_id: count - 1 for event_id, count in runs.items() if count > 1}
    return sum(again.values()), sum(max(0, n - lost[i]) for i, n in again.items())


def forward_checks(run: Run, rig: Rig, lost: Counter[str]) -> list[tuple[str, str, bool]]:
    delivered = rig.sink.delivered()
    missing = [i for i in run.acked if i not in delivered]
    wrong = [i for i, bodies in delivered.items()
             if i not in run.acked or set(bodies) != {body_hash(run.acked[i])}]  # fmt: skip
    repeated, unexplained = repeats({i: sum(b.values()) for i, b in delivered.items()}, lost)
    return [
        ("every forward delivered, the event id its webhook-id",
         f"{len(delivered)} delivered, {len(missing)} missing, {len(wrong)} unknown or wrong body",
         not missing and not wrong),
        ("every forward delivered once, but after a killed worker",
         f"{repeated} answered 2xx again, {unexplained} not after a lost attempt",
         unexplained == 0),
    ]  # fmt: skip


def hook_check(run: Run, rig: Rig, lost: Counter[str]) -> tuple[str, str, bool]:
    lines = rig.hook_log.read_text().split() if rig.hook_log.exists() else []
    runs = Counter(lines)
    missing = sum(1 for i in run.acked if i not in runs)
    again, unexplained = repeats(runs, lost)
    return ("every hook run once, but after a killed worker",
            f"{len(runs)} run, {missing} missing, {again} run again, {unexplained} not after "
            "a lost attempt", not missing and not unexplained)  # fmt: skip


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{count} {what}" for what, count in sorted(counter.items()))


def report(run: Run, found: list[tuple[str, str, bool]], levels: list[Any]) -> bool:
    click.echo(f"\nsoak: {run.minutes:g} min, {run.rate:g}/s, seed {run.seed}, store {run.store}")
    click.echo(f"posted: {_counts(run.answers)}\n")
    done = [(f"{at:.0f}s", fault, detail) for at, fault, detail in sorted(run.done)]
    click.echo(table(("at", "fault", "what was done"), done) + "\n")
    rows = [(name, result, "ok" if ok else "FAILED") for name, result, ok in found]
    rows += [(f"{name} (first quarter -> end)", f"{early} -> {late} ({change})",
              "ok" if ok else "FAILED") for name, early, late, change, ok in levels]  # fmt: skip
    click.echo(table(("check", "found", "verdict"), rows))
    return all(ok for *_, ok in found) and all(row[-1] for row in levels)


def soak(run: Run, database_url: str | None, quiet_timeout: float) -> bool:
    duration = run.minutes * 60
    folder = Path(tempfile.mkdtemp(prefix="tavus-soak-"))
    rig = Rig(run, folder, database_url)
    sampling = threading.Event()
    try:
        rig.start()
        run.started = time.monotonic()
        poster = Poster(run, f"http://127.0.0.1:{rig.web_port}/callbacks/{TOKEN}")
        poster.thread.start()
        threading.Thread(target=sample, args=(run, rig, sampling), daemon=True).start()
        plan = schedule(run, (duration / 4, duration * 0.75), FAULTS)
        chaos = Chaos(run, rig, (duration / 2) / len(plan))
        chaos.play(plan)
        chaos.wait()
        time.sleep(max(0.0, duration - run.now()))
        poster.stopping.set()
        poster.thread.join(120)
        sampling.set()
        waited = quiet(rig, quiet_timeout)
        run.note("wait for quiet", f"{waited:.0f} s")
        levels = growth(run, duration / 8, duration / 4, (duration * 0.85, duration))
        passed = report(run, checks(run, rig), levels)
    finally:
        sampling.set()
        rig.stop()
    if passed:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        click.echo(f"logs: {folder}")
    return passed


@click.command("soak")
@click.option("--minutes", type=float, default=60, show_default=True)
@click.option("--rate", type=float, default=5, show_default=True, help="Callbacks per second.")
@click.option("--seed", type=int, default=lambda: random.randrange(10**6), help="[random]")
@click.option(
    "--store",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="postgres: DATABASE_URL when it names one, else a cluster of its own.",
)
@click.option("--quiet-timeout", type=float, default=300, show_default=True,
              help="Seconds to wait for the last retries once the load stops.")  # fmt: skip
def soak_command(minutes: float, rate: float, seed: int, store: str, quiet_timeout: float) -> None:
    """Run web, worker and beat under load for N minutes, break them on a seeded schedule, and
    check that nothing was lost, duplicated, stuck or growing."""
    if importlib.util.find_spec("psutil") is None:
        raise click.ClickException("soak samples memory with psutil: pip install "
                                   "'tavus-callbacks[bench]'")  # fmt: skip
    url = os.environ.get("DATABASE_URL", "")
    database_url = url if store == "postgres" and url.startswith("postgres") else None
    run = Run(minutes, rate, seed, store)
    if not soak(run, database_url, quiet_timeout):
        click.echo(f"\nFAILED: reproduce with tavus-callbacks soak --minutes {minutes:g} "
                   f"--rate {rate:g} --seed {seed} --store {store}")  # fmt: skip
        raise SystemExit(1)
    click.echo(f"\nok: seed {seed}")


def register(main: click.Group) -> None:
    main.add_command(soak_command)
