"""Fault: Redis stopped for 10 s during load, then started again.

The real processes: gunicorn serving the receiver (2 workers), a Celery worker, a private
redis-server with the shipped persistence (AOF), SQLite as the store. A steady stream of distinct
callbacks is posted throughout. While Redis is down the receiver spools; when it is back the
spool drains. The run ends with the store compared to what was sent: every event once, byte for
byte, and every reply a 202 (accepted or spooled).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import requests

from receiver.spool import Spool
from tests.helpers import TOKEN, fixture
from tests.services import RedisServer, Web, Worker, base_env, wait_until
from workers.store.db import Store
from workers.store.models import Event

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 10
BEFORE_SECONDS = 4
AFTER_SECONDS = 4
PAUSE = 0.04  # between posts: about 20 callbacks a second, steady


def body(n: int) -> bytes:
    template = orjson.loads(fixture("shutdown"))
    template["conversation_id"] = f"outage-{n:05d}"
    template["timestamp"] = f"2025-07-11T06:{n // 3600 % 60:02d}:{n // 60 % 60:02d}.{n % 60:02d}Z"
    return orjson.dumps(template)


def test_redis_stopped_for_ten_seconds_during_load(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis", appendonly=True).start()
    database_url = f"sqlite:///{tmp_path / 'events.db'}"
    store = Store(database_url)
    store.upgrade()
    spool = Spool(tmp_path / "spool")
    env = base_env(
        REDIS_URL=redis_server.url,
        DATABASE_URL=database_url,
        CALLBACK_TOKENS=TOKEN,
        SPOOL_DIR=str(spool.directory),
        SPOOL_DRAIN_INTERVAL_SECONDS="1",
        # A message the worker had taken when Redis went away comes back after this long.
        VISIBILITY_TIMEOUT_SECONDS="20",
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    restarts = supervise(worker)
    web = Web(env, tmp_path / "web.log", workers=2).start()
    replies: dict[int, tuple[int, dict]] = {}
    stop = threading.Event()

    def load() -> None:
        url = f"{web.url}/callbacks/{TOKEN}"
        n = 0
        while not stop.is_set():
            response = requests.post(url, data=body(n), timeout=30)
            replies[n] = (response.status_code, response.json())
            n += 1
            time.sleep(PAUSE)

    sender = threading.Thread(target=load)
    try:
        sender.start()
        time.sleep(BEFORE_SECONDS)
        redis_server.stop()
        down_at = len(replies)
        time.sleep(OUTAGE_SECONDS)
        redis_server.start()
        up_at = len(replies)
        time.sleep(AFTER_SECONDS)
        stop.set()
        sender.join(timeout=60)

        sent = len(replies)
        wait_until(lambda: spool.size() == 0, timeout=60)
        try:
            wait_until(lambda: _stored_count(store) >= sent, timeout=90, interval=0.5)
        except TimeoutError:
            pytest.fail(_what_is_missing(store, replies, redis_server))
        time.sleep(2)  # anything extra (a duplicate) would show up now
        with store.session() as session:
            rows = [(e.id, e.event_key, e.body, e.status) for e in session.query(Event)]
    finally:
        stop.set()
        restarts.append(None)  # ends supervision
        web.stop()
        worker.stop()
        redis_server.stop()
        store.dispose()

    statuses = Counter((code, reply["status"]) for code, reply in replies.values())
    figures = {
        "sent": sent,
        "sent_during_outage": up_at - down_at,
        "accepted": statuses[(202, "accepted")],
        "spooled": statuses[(202, "spooled")],
        "stored": len(rows),
        "duplicates": len(rows) - len({key for _, key, _, _ in rows}),
        "worker_restarts": len(restarts) - 1,
    }
    print(f"\nredis outage figures: {json.dumps(figures)}")
    (tmp_path / "figures.json").write_text(json.dumps(figures))

    assert set(statuses) <= {(202, "accepted"), (202, "spooled")}, statuses
    assert figures["spooled"] > 0 and figures["accepted"] > 0
    assert figures["duplicates"] == 0
    assert len(rows) == sent
    by_id = {event_id: (stored_body, status) for event_id, _, stored_body, status in rows}
    for n, (_, reply) in replies.items():
        stored_body, status = by_id[reply["event_id"]]  # the id each sender was given
        assert stored_body == body(n).decode()
        assert status == "processed"


def _stored_count(store: Store) -> int:
    with store.session() as session:
        return session.query(Event).count()


def supervise(worker: Worker) -> list:
    """Restart the Celery worker when it exits, as Heroku or Kubernetes would.

    Celery can die on a broker connection lost at the wrong moment ("Unrecoverable error" while
    restoring unacked messages, celery/kombu#970 and alike); what matters is that nothing is
    lost once it is back. Returns the list of restart times; append None to stop.
    """
    restarts: list = []

    def watch() -> None:
        while not restarts or restarts[-1] is not None:
            if worker.process is not None and worker.process.poll() is not None:
                worker.stop()
                worker.start()
                restarts.append(time.monotonic())
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    return restarts


def _what_is_missing(store: Store, replies: dict, redis_server: RedisServer) -> str:
    import redis

    with store.session() as session:
        stored = {event.id for event in session.query(Event)}
    missing = {n: reply for n, (_, reply) in replies.items() if reply["event_id"] not in stored}
    client = redis.Redis.from_url(redis_server.url)
    queued = b"".join(client.lrange("events", 0, -1))
    unacked = b"".join(client.hvals("unacked"))
    lines = [f"{len(missing)} of {len(replies)} not stored:"]
    for n, reply in sorted(missing.items())[:10]:
        event_id = reply["event_id"].encode()
        lines.append(f"  #{n} {reply} queued={event_id in queued} unacked={event_id in unacked}")
    return "\n".join(lines)
