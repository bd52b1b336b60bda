"""Tavus's side of the rig: callbacks posted to the balancer, and the audit of what became of
each one.

Every callback is a ``system.replica_joined`` with a conversation id of its own, so each is one
event end to end: one row in the store, one delivery in the ledger, one POST at the destination.
"""

from __future__ import annotations

import contextlib
import http.client
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from tests.cluster.rig import TOKEN, Cluster
from tests.services import wait_until

CLIENT_TIMEOUT = 15.0  # seconds Tavus waits for an answer (a guess; the docs do not say)


@dataclass(frozen=True)
class Answer:
    conversation_id: str
    status: int  # 0: no HTTP answer at all (refused, reset, timed out)
    seconds: float

    @property
    def acked(self) -> bool:
        return 200 <= self.status < 300


def callback(conversation_id: str) -> bytes:
    return orjson.dumps(
        {
            "properties": {"replica_id": "r-cluster"},
            "conversation_id": conversation_id,
            "event_type": "system.replica_joined",
            "message_type": "system",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    )


class Sender:
    """One keep-alive connection to the balancer, reopened after any failure."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.conn: http.client.HTTPConnection | None = None

    def post(self, conversation_id: str) -> Answer:
        started = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(*self.address, timeout=CLIENT_TIMEOUT)
            self.conn.request(
                "POST",
                f"/callbacks/{TOKEN}",
                body=callback(conversation_id),
                headers={"Content-Type": "application/json"},
            )
            reply = self.conn.getresponse()
            reply.read()
            status = reply.status
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            status = 0
        return Answer(conversation_id, status, time.perf_counter() - started)


@dataclass
class Load:
    """Callbacks with ids ``<prefix>-<n>``, sent by ``senders`` threads, every answer kept."""

    address: tuple[str, int]
    prefix: str
    senders: int = 16
    answers: list[Answer] = field(default_factory=list)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self, count: int) -> list[str]:
        with self._lock:
            first, self._next = self._next, self._next + count
        return [f"{self.prefix}-{n:07d}" for n in range(first, first + count)]

    def burst(self, count: int) -> float:
        """Post ``count`` callbacks as fast as the senders go; the seconds it took."""
        work: queue.Queue[str | None] = queue.Queue()
        for conversation_id in self.ids(count):
            work.put(conversation_id)
        started = time.perf_counter()
        self._run(work, stop=None)
        return time.perf_counter() - started

    def steady(self, rate: float) -> Steady:
        """Post ``rate`` callbacks a second until the returned handle is stopped."""
        return Steady(self, rate).start()

    def _run(self, work: queue.Queue[str | None], stop: threading.Event | None) -> None:
        def send() -> None:
            sender = Sender(self.address)
            while True:
                try:
                    conversation_id = work.get(timeout=0.5)
                except queue.Empty:
                    if stop is None or stop.is_set():
                        return
                    continue
                if conversation_id is None:
                    return
                answer = sender.post(conversation_id)
                with self._lock:
                    self.answers.append(answer)

        threads = [threading.Thread(target=send, daemon=True) for _ in range(self.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


class Steady:
    """A paced stream of callbacks in the background: one every ``1 / rate`` seconds."""

    def __init__(self, load: Load, rate: float) -> None:
        self.load = load
        self.rate = rate
        self.work: queue.Queue[str | None] = queue.Queue()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._pace, daemon=True),
            threading.Thread(target=load._run, args=(self.work, self.stopping), daemon=True),
        ]

    def start(self) -> Steady:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT + 5)

    def _pace(self) -> None:
        started = time.monotonic()
        sent = 0
        while not self.stopping.is_set():
            due = int((time.monotonic() - started) * self.rate)
            for conversation_id in self.load.ids(due - sent):
                self.work.put(conversation_id)
            sent = max(sent, due)
            time.sleep(0.01)


# --- what became of every callback ----------------------------------------------------------


@dataclass
class Audit:
    """Every acked callback, followed through the store, the ledger and the destination."""

    posted: int
    acked: int
    not_2xx: Counter[int]  # status -> count (0: no answer)
    not_stored: int  # acked, no processed row in the store
    stored_twice: int  # more than one row for one callback
    not_delivered: int  # acked, no delivered row in the forward ledger
    ledger_twice: int  # more than one delivery row for one (event, destination)
    not_received: int  # acked, never POSTed to the destination
    received_again: int  # POSTs beyond the first for one event (the same webhook-id)
    stuck: dict[str, int]  # queues, unacked, spool, unfinished rows: all 0 when settled

    @property
    def lost(self) -> int:
        return self.not_stored + self.not_delivered + self.not_received

    def summary(self) -> str:
        statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(self.not_2xx.items()))
        stuck = {k: v for k, v in self.stuck.items() if v}
        return (
            f"posted {self.posted}, acked 2xx {self.acked}, non-2xx {sum(self.not_2xx.values())}"
            f"{f' ({statuses})' if statuses else ''}; of the acked: not stored {self.not_stored},"
            f" stored twice {self.stored_twice}, not delivered {self.not_delivered}, ledger"
            f" twice {self.ledger_twice}, never received {self.not_received}, POSTs repeated"
            f" {self.received_again}; stuck {stuck or 'nothing'}"
        )


def received(cluster: Cluster, prefix: str) -> Counter[str]:
    """How many POSTs the destination got per conversation id of this load."""
    counts: Counter[str] = Counter()
    if cluster.received_log.exists():
        for line in cluster.received_log.read_bytes().splitlines():
            conversation_id = orjson.loads(line)["conversation_id"]
            if conversation_id and conversation_id.startswith(prefix + "-"):
                counts[conversation_id] += 1
    return counts


def settled(cluster: Cluster, prefix: str, acked: set[str]) -> bool:
    backlog = cluster.backlog()
    return not any(backlog.values()) and acked <= set(received(cluster, prefix))


def audit(cluster: Cluster, load: Load, timeout: float = 120) -> Audit:
    """Every callback ``load`` got a 2xx for, followed to the end (see ``audit_ids``)."""
    acked = {a.conversation_id for a in load.answers if a.acked}
    not_2xx = Counter(a.status for a in load.answers if not a.acked)
    return audit_ids(cluster, load.prefix, acked, len(load.answers), not_2xx, timeout)


def audit_ids(
    cluster: Cluster,
    prefix: str,
    acked: set[str],
    posted: int,
    not_2xx: Counter[int],
    timeout: float = 120,
) -> Audit:
    """Wait until every acked callback reached the destination and Redis is empty (or the
    timeout passed), then count what happened to each."""
    # A timeout here is a finding, which the counts below report, not an error.
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: settled(cluster, prefix, acked), timeout, interval=0.5)
    like = prefix + "-%"
    rows = processed(cluster, prefix)
    deliveries = Counter(
        cid
        for (cid,) in cluster.sql(
            "SELECT e.conversation_id FROM forward_deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE e.conversation_id LIKE %s AND d.status = %s",
            like,
            "delivered",
        )
    )
    posts = received(cluster, prefix)
    (unfinished,) = cluster.sql(
        "SELECT count(*) FROM events WHERE conversation_id LIKE %s AND status <> %s",
        like,
        "processed",
    )[0]
    (undelivered,) = cluster.sql(
        "SELECT count(*) FROM forward_deliveries WHERE status <> %s", "delivered"
    )[0]
    return Audit(
        posted=posted,
        acked=len(acked),
        not_2xx=not_2xx,
        not_stored=sum(1 for cid in acked if rows[cid] == 0),
        stored_twice=sum(1 for n in rows.values() if n > 1),
        not_delivered=sum(1 for cid in acked if deliveries[cid] == 0),
        ledger_twice=sum(1 for n in deliveries.values() if n > 1),
        not_received=sum(1 for cid in acked if posts[cid] == 0),
        received_again=sum(n - 1 for n in posts.values()),
        stuck={
            **cluster.backlog(),
            "spooled": cluster.spooled(),
            "events_unfinished": unfinished,
            "deliveries_unfinished": undelivered,
        },
    )


def processed(cluster: Cluster, prefix: str) -> Counter[str]:
    """Rows in the store per conversation id of this load, processed ones only."""
    return Counter(
        cid
        for (cid,) in cluster.sql(
            "SELECT conversation_id FROM events WHERE conversation_id LIKE %s AND status = %s",
            prefix + "-%",
            "processed",
        )
    )


def rate_between(times: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Events a second between the ``low`` and ``high`` fractions of ``times`` (sorted): the
    steady rate, without the start-up and the tail."""
    if len(times) < 10:
        return 0.0
    first, last = times[int(low * len(times))], times[int(high * len(times)) - 1]
    return (int(high * len(times)) - int(low * len(times))) / max(last - first, 1e-6)
