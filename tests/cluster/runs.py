"""The rig's runs: scale-out (intake by web hosts, drain by worker hosts) and faults under a
steady load, each ending in tables for docs/multi-host.md and the audit of every acked callback.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from bench import load as wrk
from schemas.messages import EVENTS_QUEUE
from tests.cluster.load import Audit, Load, audit, audit_ids, callback, processed, rate_between
from tests.cluster.rig import TOKEN, WEB_HOSTS, WORKER_HOSTS, Cluster
from tests.services import wait_until

SURGE = 300  # callbacks posted at once so that every worker is busy when one host dies


@dataclass(frozen=True)
class IntakeRow:
    web_hosts: int
    requests: int
    per_second: float  # acked (2xx) a second
    web_cores: float  # CPU the web hosts used, in cores (their quota: app_cpus each)
    not_2xx: int  # answers other than 2xx, and requests with no answer


@dataclass(frozen=True)
class DrainRow:
    worker_hosts: int
    events: int
    per_second: float  # forwarded a second, between 10 % and 90 % of the backlog
    worker_cores: float  # CPU the worker hosts used meanwhile, in cores
    per_cpu_second: float  # events per CPU-second of the worker hosts


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


def scale_out(
    cluster: Cluster, seconds: float
) -> tuple[list[IntakeRow], list[DrainRow], list[Audit]]:
    """For 1, 2 and 3 worker hosts: a backlog posted flat out for ``seconds`` with the workers
    stopped (the intake, through 1 web host the first time and 2 after), then drained."""
    intake, drain, audits = [], [], []
    for workers in (1, 2, 3):
        prefix = f"scale-{workers}"
        row, acked, not_2xx = intake_with(cluster, WEB_HOSTS[: min(workers, 2)], prefix, seconds)
        intake.append(row)
        drain.append(drain_with(cluster, WORKER_HOSTS[:workers], prefix, acked))
        # wrk does not say which callbacks it got a 2xx for: every one the store processed
        # (at least as many as wrk counted) is followed to the destination.
        ids = set(processed(cluster, prefix))
        assert len(ids) >= acked, f"{acked} acked, {len(ids)} processed"
        audits.append(audit_ids(cluster, prefix, ids, row.requests, not_2xx))
    cluster.serving(WEB_HOSTS)
    return intake, drain, audits


def cores_used(cluster: Cluster, names: tuple[str, ...]) -> float:
    return sum(cluster.host(name).cpu_seconds() for name in names)


def intake_with(
    cluster: Cluster, webs: tuple[str, ...], prefix: str, seconds: float
) -> tuple[IntakeRow, int, Counter[int]]:
    """wrk (the benchmark's script) flat out through the balancer to ``webs`` only."""
    cluster.serving(webs)
    bodies = cluster.work / "bodies.jsonl"
    bodies.write_bytes(callback("@CID@") + b"\n")
    used, started = cores_used(cluster, webs), time.monotonic()
    result = wrk.run(
        f"http://{cluster.address('lb')}/callbacks/{TOKEN}",
        bodies,
        cluster.work / "wrk.json",
        seconds,
        prefix=prefix,
    )
    acked = sum(n for status, n in result.statuses.items() if 200 <= status < 300)
    not_2xx = Counter({s: n for s, n in result.statuses.items() if not 200 <= s < 300})
    not_2xx[0] += sum(result.errors.values())
    row = IntakeRow(
        web_hosts=len(webs),
        requests=result.requests,
        per_second=acked / result.seconds,
        web_cores=(cores_used(cluster, webs) - used) / (time.monotonic() - started),
        not_2xx=sum(not_2xx.values()),
    )
    return row, acked, +not_2xx


def drain_with(cluster: Cluster, workers: tuple[str, ...], prefix: str, acked: int) -> DrainRow:
    start_workers(cluster, workers)  # each takes messages as soon as it is ready
    used, started = cores_used(cluster, workers), time.time()

    # Done: every acked callback forwarded, and nothing left in Redis (wrk's last requests in
    # flight may have been acked without wrk counting them: they are drained too).
    def drained() -> bool:
        return len(first_arrivals(cluster, prefix)) >= acked and not any(cluster.backlog().values())

    wait_until(drained, 900, interval=0.5)
    cpu = cores_used(cluster, workers) - used
    arrivals = first_arrivals(cluster, prefix)
    stop_workers(cluster, workers)
    return DrainRow(
        worker_hosts=len(workers),
        events=len(arrivals),
        per_second=rate_between(arrivals),
        worker_cores=cpu / (arrivals[-1] - started),
        per_cpu_second=len([t for t in arrivals if t >= started]) / cpu,
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
        f"{len(held)} message(s) taken by {name} went back to the queue {back:.1f} s after"
        f" the kill (visibility timeout {timeout} s) and were finished by the others"
    )


def web_vanishes(cluster: Cluster, load: Load, name: str = "web2") -> str:
    gone_at = time.monotonic()
    cluster.vanish(name)
    wait_until(lambda: name not in cluster.routed_to(), 60, interval=0.1)
    taken_out = time.monotonic() - gone_at
    time.sleep(5)  # the load carries on through the other web host
    return f"haproxy took {name} out of rotation {taken_out:.1f} s after it vanished"


def redis_primary_killed(cluster: Cluster, load: Load, down_seconds: float = 15) -> str:
    """SIGKILL the Redis primary (the server only: the sentinel on its host lives on). The
    sentinels promote the replica; with no replica left to confirm (``REDIS_MIN_REPLICAS=1``)
    the intake spools. After ``down_seconds`` the node comes back as a restarted machine's
    would, with its own configuration and append-only file, the sentinels make it a replica
    of the new primary, and the spools drain once it confirms. beat keeps sending, to the new
    primary: its next purge is waited for. Nothing is restarted but the killed node."""
    old = cluster.redis_primary()
    spooled = Deepest(cluster.spooled).start()
    killed = time.monotonic()
    cluster.kill(old, "redis")
    wait_until(lambda: cluster.redis_primary() != old, 120, interval=0.2)
    promoted = time.monotonic() - killed
    new = cluster.redis_primary()
    time.sleep(max(0.0, down_seconds - promoted))
    cluster.start_redis(old)
    back = time.monotonic()
    node = cluster.redis_node(old)

    def following() -> bool:
        info = node.info("replication")
        return info["role"] == "slave" and info.get("master_link_status") == "up"

    wait_until(following, 120, interval=0.2)
    replica_after = time.monotonic() - back
    wait_until(lambda: cluster.spooled() == 0, 120, interval=0.2)
    drained = time.monotonic() - back
    most = spooled.stop()
    purges = cluster.purges_done()
    wait_until(lambda: cluster.purges_done() > purges, 120, interval=0.5)
    beat = time.monotonic() - killed
    return (
        f"{old} (the primary) SIGKILLed: the sentinels promoted {new} {promoted:.1f} s later;"
        f" {old} came back after {down_seconds:.0f} s and was {new}'s replica"
        f" {replica_after:.1f} s after that; the spools held up to {most} callbacks"
        f" and were empty {drained:.1f} s after its return; beat's next purge went through {new}"
        f" to a worker {beat:.0f} s after the kill"
    )


class Deepest:
    """The largest answer of ``measure``, asked every ``interval`` seconds in the background
    between ``start`` and ``stop``."""

    def __init__(self, measure: Callable[[], int], interval: float = 0.2) -> None:
        self.measure = measure
        self.interval = interval
        self.most = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> Deepest:
        self.thread.start()
        return self

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join()
        return self.most

    def _sample(self) -> None:
        while not self.stopping.wait(self.interval):
            self.most = max(self.most, self.measure())


def postgres_cut(cluster: Cluster, load: Load, seconds: float = 20) -> str:
    """Unplug PostgreSQL's host for ``seconds``: the intake carries on (it never touches the
    store), the workers' tasks wait or retry, and the backlog is worked off once it is back."""
    before = sum(cluster.backlog().values())
    host = cluster.host("postgres")
    host.link(up=False)
    deepest = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        deepest = max(deepest, sum(cluster.backlog().values()))
        time.sleep(0.5)
    host.link(up=True)
    back = time.monotonic()
    wait_until(lambda: sum(cluster.backlog().values()) <= before + 20, 300, interval=0.5)
    return (
        f"unreachable for {seconds:.0f} s: the backlog grew to {deepest} messages and was"
        f" worked off {time.monotonic() - back:.1f} s after it came back"
    )


FAULTS: dict[str, Callable[[Cluster, Load], str]] = {
    "a worker host vanishes": worker_vanishes,
    "a web host vanishes": web_vanishes,
    "the Redis primary is killed": redis_primary_killed,
    "PostgreSQL cut off for 20 s": postgres_cut,
}


def faults(
    cluster: Cluster, names: list[str], rate: float, settle: float = 5
) -> tuple[list[FaultRow], Audit]:
    """Every worker host up, a steady ``rate`` of callbacks, and the named faults one after
    the other; then the load stops and every acked callback is audited."""
    with ThreadPoolExecutor(len(WORKER_HOSTS) + 1) as pool:  # beat beside the workers
        beat = pool.submit(cluster.start_beat)
        list(pool.map(cluster.start_worker, WORKER_HOSTS))
        beat.result()
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
        stop_workers(cluster, tuple(n for n in (*WORKER_HOSTS, "beat") if n in cluster.running))


# --- tables ---------------------------------------------------------------------------------


def table(rows: list, headers: list[str]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in vars(row).values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


INTAKE_HEADERS = ["web hosts", "requests", "acked/s", "web CPU used (cores)", "non-2xx"]
DRAIN_HEADERS = [
    "worker hosts", "events", "drained/s (10-90 %)", "worker CPU used (cores)",
    "events per CPU-second",
]  # fmt: skip
FAULT_HEADERS = ["fault", "requests meanwhile", "non-2xx", "what happened"]
