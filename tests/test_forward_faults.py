"""Forwarding under faults, with the processes of a deployment (gunicorn, a Celery worker on
every queue started as the Procfile starts it, Redis with AOF, the store): a destination down
for 30 s under load, a worker SIGKILLed mid-delivery, Redis restarted mid-delivery. Each ends by
checking what the destination received, with the `standardwebhooks` reference library."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers import TOKEN, Load, load
from tests.services import RedisServer, Web, Worker, base_env, free_port, wait_until
from tests.sinks import HttpSink, verified
from workers import queries
from workers.store.db import Store
from workers.store.models import Event

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
VISIBILITY_TIMEOUT = 10  # seconds: retries wait at most 4.75 s, a dead worker's tasks come back
FORWARD_TIMEOUT = 3  # seconds: a claim's lease is 2 x 3 + 5 = 11 s


@dataclass
class Rig:
    redis: RedisServer
    store: Store
    web: Web
    worker: Worker
    sink_port: int

    @property
    def url(self) -> str:
        return f"{self.web.url}/callbacks/{TOKEN}"

    def delivered(self) -> int:
        with self.store.session() as session:
            rows = queries.list_deliveries(session, limit=100_000)
        return sum(row["status"] == "delivered" for row in rows)


@pytest.fixture
def rig(fault_db: str, tmp_path: Path) -> Iterator[Rig]:
    yield from started(fault_db, tmp_path)


def started(fault_db: str, tmp_path: Path, **extra: str) -> Iterator[Rig]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    store = Store(fault_db)
    store.upgrade()
    port = free_port()
    env = base_env(
        REDIS_URL=server.url,
        DATABASE_URL=fault_db,
        CALLBACK_TOKENS=TOKEN,
        VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        WORKER_SOFT_SHUTDOWN_SECONDS="4",
        REMAP_SIGTERM="SIGQUIT",
        FORWARD_APP_URL=f"http://127.0.0.1:{port}/tavus/webhook",
        FORWARD_APP_SECRET=SECRET,
        FORWARD_TIMEOUT_SECONDS=str(FORWARD_TIMEOUT),
        # Down 30 s under load, it pauses (20 failures in a row): a probe every 2 s, not 60.
        FORWARD_APP_PROBE_SECONDS="2",
        **extra,
    )
    web = Web(env, tmp_path / "web.log").start()
    worker = Worker(env, tmp_path / "worker.log", queues="events,storage,alerts,forward,hooks")
    worker.start()
    try:
        yield Rig(server, store, web, worker, port)
    finally:
        worker.stop()
        web.stop()
        server.stop()
        store.dispose()


def stored(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Event))


def received_once(sink: HttpSink, bodies: list[bytes], duplicates_allowed: int = 0) -> Counter:
    """Every body arrived (accepted 2xx), signed; repeats only as allowed, with the same id."""
    accepted = verified(sink.accepted(), SECRET)
    assert sorted(set(r.body for r in accepted)) == sorted(bodies)
    ids = Counter(r.headers["webhook-id"] for r in accepted)
    assert len(ids) == len(bodies)  # one webhook-id per event, whatever the repeats
    assert sum(ids.values()) - len(ids) <= duplicates_allowed
    return ids


def test_a_destination_down_30s_under_load_receives_everything_once_back(rig: Rig) -> None:
    bodies = load(100, "fwd-down")
    started = time.monotonic()
    assert Load(rig.url, bodies).start().join().count() == {"accepted": len(bodies)}
    time.sleep(max(0.0, 30 - (time.monotonic() - started)))  # down 30 s in all
    sink = HttpSink(port=rig.sink_port).start()
    back = time.monotonic()
    try:
        wait_until(lambda: rig.delivered() == len(bodies), timeout=120, interval=0.5)
        caught_up = time.monotonic() - back
        time.sleep(2)
        received_once(sink, bodies)
    finally:
        sink.stop()
    with rig.store.session() as session:
        rows = queries.list_deliveries(session, limit=1000)
    assert max(row["attempts"] for row in rows) > 1  # they were retried while it was down
    print(f"destination down 30 s, 100 events: all delivered {caught_up:.1f}s after it was back")


def test_a_worker_sigkilled_mid_delivery_delivers_with_at_most_one_duplicate(rig: Rig) -> None:
    sink = HttpSink(port=rig.sink_port, delay=2).start()
    try:
        bodies = load(6, "fwd-kill")
        assert Load(rig.url, bodies).start().join().count() == {"accepted": len(bodies)}
        wait_until(lambda: len(sink.received) >= 1, timeout=30, interval=0.02)
        rig.worker.stop(signal.SIGKILL)  # mid-delivery: the sink is still answering
        rig.worker.start()
        wait_until(lambda: rig.delivered() == len(bodies), timeout=120, interval=0.5)
        time.sleep(2)
        ids = received_once(sink, bodies, duplicates_allowed=2)  # the two in flight at most
        assert max(ids.values()) <= 2
    finally:
        sink.stop()


def test_redis_restarted_mid_delivery_delivers_everything(rig: Rig) -> None:
    sink = HttpSink(port=rig.sink_port, delay=1).start()
    try:
        bodies = load(20, "fwd-redis")
        assert Load(rig.url, bodies).start().join().count() == {"accepted": len(bodies)}
        # Every event stored first: the restart hits deliveries in flight, not intake (the
        # fault suite covers that).
        wait_until(lambda: stored(rig.store) == len(bodies), timeout=60, interval=0.1)
        wait_until(lambda: len(sink.received) >= 2, timeout=30, interval=0.02)
        rig.redis.stop(signal.SIGTERM)
        rig.redis.start()
        wait_until(lambda: rig.delivered() == len(bodies), timeout=120, interval=0.5)
        time.sleep(2)
        received_once(sink, bodies, duplicates_allowed=2)
    finally:
        sink.stop()


def test_the_broker_lost_as_the_forwards_are_queued_still_delivers_them(
    fault_db: str, tmp_path: Path
) -> None:
    """The soak's lost forwards: Redis went away between the event's commit and the LPUSH of
    its forward. The event task must be retried, not failed (Celery acks a failure)."""
    marker = tmp_path / "dropped"
    running = started(fault_db, tmp_path, TAVUS_EXTENSIONS="tests.extensions.broker_drop",
                      BROKER_DROP_MARKER=str(marker))  # fmt: skip
    with contextlib.closing(running):
        rig = next(running)
        sink = HttpSink(port=rig.sink_port).start()
        try:
            bodies = load(3, "fwd-drop")
            assert Load(rig.url, bodies).start().join().count() == {"accepted": len(bodies)}
            wait_until(lambda: rig.delivered() == len(bodies), timeout=45, interval=0.5)
            assert marker.exists()  # the fault did happen
            received_once(sink, bodies)
        finally:
            sink.stop()
