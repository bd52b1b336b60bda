"""The rig's runs: scale-out (intake by web hosts, drain by worker hosts) and faults under a
steady load, each ending in tables for docs/multi-host.md and the audit of every acked callback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from schemas.messages import EVENTS_QUEUE
from tests.cluster.load import Audit, Load, audit, latency_ms, rate_between
from tests.cluster.rig import WEB_HOSTS, WORKER_HOSTS, Cluster
from tests.services import wait_until

SURGE = 300  # callbacks posted at once so that every worker is busy when one host dies


@dataclass(frozen=True)
class IntakeRow:
    web_hosts: int
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    not_2xx: int


@dataclass(frozen=True)
class DrainRow:
    worker_hosts: int
    events: int
    per_second: float  # forwarded a second, between 10 % and 90 % of the backlog
    seconds: float  # from the workers' start to the last event at the destination


@dataclass(frozen=True)
class FaultRow:
    fault: str
    requests: int  # answered while the fault lasted
    not_2xx: int
    what_happened: str


def start_workers(cluster: Cluster, names: tuple[str, ...]) -> None:
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(cluster.start_worker, names))


def stop_workers(cluster: Cluster, names: tuple[str, ...]) -> None:
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(cluster.stop, names))


def first_arrivals(cluster: Cluster, prefix: str) -> list[float]:
    """When each event of the load first reached the destination, sorted."""
    first: dict[str, float] = {}
    for line in cluster.received_log.read_bytes().splitlines():
        post = orjson.loads(line)
        cid = post["conversation_id"] or ""
        if cid.startswith(prefix + "-"):
            first.setdefault(cid, post["at"])
    return sorted(first.values())


# --- scale-out ------------------------------------------------------------------------------


def scale_out(cluster: Cluster, events: int) -> tuple[list[IntakeRow], list[DrainRow], Audit]:
    """For 1, 2 and 3 worker hosts: a backlog of ``events`` posted with the workers stopped
    (the intake, through 1 web host the first time and 2 after), then drained."""
    intake, drain = [], []
    load = Load(cluster.intake, "scale")
    for workers in (1, 2, 3):
        webs = WEB_HOSTS[:1] if workers == 1 else WEB_HOSTS
        cluster.serving(webs)
        round_load = Load(cluster.intake, f"scale-{workers}")
        seconds = round_load.burst(events)
        answers = round_load.answers
        intake.append(
            IntakeRow(
                web_hosts=len(webs),
                requests=len(answers),
                per_second=len(answers) / seconds,
                p50_ms=latency_ms(answers, 0.5),
                p99_ms=latency_ms(answers, 0.99),
                not_2xx=sum(1 for a in answers if not a.acked),
            )
        )
        drain.append(drain_with(cluster, WORKER_HOSTS[:workers], round_load))
        load.answers += answers
    cluster.serving(WEB_HOSTS)
    return intake, drain, audit(cluster, load)


def drain_with(cluster: Cluster, workers: tuple[str, ...], load: Load) -> DrainRow:
    acked = sum(1 for a in load.answers if a.acked)
    started = time.time()
    start_workers(cluster, workers)
    wait_until(lambda: len(first_arrivals(cluster, load.prefix)) >= acked, 600, interval=0.5)
    arrivals = first_arrivals(cluster, load.prefix)
    stop_workers(cluster, workers)
    return DrainRow(
        worker_hosts=len(workers),
        events=acked,
        per_second=rate_between(arrivals),
        seconds=arrivals[-1] - started,
    )


# --- faults under steady load ---------------------------------------------------------------


def worker_vanishes(cluster: Cluster, load: Load, name: str = "worker3") -> str:
    """SIGKILL the host and unplug it while every worker is busy (a surge of callbacks on top of
    the steady load: each worker then holds a message per pool process); the messages it had
    taken come back to the queue after the visibility timeout, through the surviving workers'
    sweep, and they finish them."""
    client = cluster.redis()
    surge = threading.Thread(target=load.burst, args=(SURGE,))
    surge.start()
    wait_until(lambda: client.llen(EVENTS_QUEUE) >= 20, 60, interval=0.05)
    killed_at = time.time()
    cluster.vanish(name)
    time.sleep(3)  # the live workers ack what they had taken before the kill
    held = {
        tag
        for tag, taken in client.zrange("unacked_index", 0, -1, withscores=True)
        if taken <= killed_at
    }
    wait_until(lambda: not held & set(client.hkeys("unacked")), 300, interval=0.2)
    back = time.time() - killed_at
    surge.join()
    timeout = cluster.sizing.visibility_timeout
    return (
        f"{len(held)} messages taken by {name} went back to the queue {back:.1f} s after"
        f" the kill (visibility timeout {timeout} s) and were finished by the others"
    )


def web_vanishes(cluster: Cluster, load: Load, name: str = "web2") -> str:
    gone_at = time.monotonic()
    cluster.vanish(name)
    wait_until(lambda: name not in cluster.routed_to(), 60, interval=0.1)
    taken_out = time.monotonic() - gone_at
    time.sleep(5)  # the load carries on through the other web host
    return f"haproxy took {name} out of rotation {taken_out:.1f} s after it vanished"


def postgres_cut(cluster: Cluster, load: Load, seconds: float = 20) -> str:
    host = cluster.host("postgres")
    host.link(up=False)
    deepest = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        deepest = max(deepest, sum(cluster.backlog().values()))
        time.sleep(0.5)
    host.link(up=True)
    back = time.monotonic()
    wait_until(lambda: sum(cluster.backlog().values()) < 20, 300, interval=0.5)
    return (
        f"unreachable for {seconds:.0f} s: the backlog grew to {deepest} messages and was"
        f" worked off {time.monotonic() - back:.1f} s after it came back"
    )


FAULTS: dict[str, Callable[[Cluster, Load], str]] = {
    "a worker host vanishes": worker_vanishes,
    "a web host vanishes": web_vanishes,
    "PostgreSQL cut off for 20 s": postgres_cut,
}


def faults(
    cluster: Cluster, names: list[str], rate: float, settle: float = 5
) -> tuple[list[FaultRow], Audit]:
    """Every worker host up, a steady ``rate`` of callbacks, and the named faults one after
    the other; then the load stops and every acked callback is audited."""
    start_workers(cluster, WORKER_HOSTS)
    load = Load(cluster.intake, "faults", senders=8)
    stream = load.steady(rate)
    rows = []
    try:
        time.sleep(settle)
        for name in names:
            before = len(load.answers)
            what = FAULTS[name](cluster, load)
            time.sleep(settle)
            during = load.answers[before:]
            rows.append(FaultRow(name, len(during), sum(not a.acked for a in during), what))
    finally:
        stream.stop()
    try:
        return rows, audit(cluster, load, timeout=300)
    finally:
        stop_workers(cluster, tuple(n for n in WORKER_HOSTS if n in cluster.running))


# --- tables ---------------------------------------------------------------------------------


def table(rows: list, headers: list[str]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in vars(row).values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


INTAKE_HEADERS = ["web hosts", "requests", "acked/s", "p50 ms", "p99 ms", "non-2xx"]
DRAIN_HEADERS = ["worker hosts", "events", "drained/s (10-90 %)", "seconds to last"]
FAULT_HEADERS = ["fault", "requests meanwhile", "non-2xx", "what happened"]
