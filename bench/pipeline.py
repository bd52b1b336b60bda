"""The workers' side: messages made by the real receiver, queued in bulk, timed until drained.

Messages come from the receiver app itself (test client, same Redis), so they are exactly what
production queues; they are then moved to the first queue a benchmark worker listens on, all at
once, and the clock runs until Celery has acked the last of them and of the tasks they sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime

import redis
from sqlalchemy import func, select

from receiver import create_app
from schemas.messages import EVENTS_QUEUE
from schemas.settings import Settings
from workers.store.db import Store
from workers.store.models import Event, EventStatus

from . import payloads
from .services import ServiceError

# kombu's Redis transport keeps a message it handed out, until acked, in these.
UNACKED = "unacked"
_PUSH_CHUNK = 500


def settle(client: redis.Redis, queues: Iterable[str], quiet: float = 0.3) -> None:
    """Wait until nothing more lands in ``queues``: a server may still be answering requests
    that were waiting in its listen backlog when the load stopped."""
    names = list(queues)
    last, still_since = None, time.monotonic()
    while time.monotonic() - still_since < quiet:
        lengths = [client.llen(name) for name in names]
        if lengths != last:
            last, still_since = lengths, time.monotonic()
        time.sleep(0.05)


def made_by_receiver(
    settings: Settings, templates: list[str], count: int, prefix: str
) -> list[bytes]:
    """``count`` messages, whole conversations, as the receiver queues them (oldest first).

    Conversations run side by side, as they do in production: every conversation's first
    callback, then every one's second, and so on. (One conversation at a time would have two
    worker processes wait on each other's lock of the same row all along.)
    """
    client = redis.Redis.from_url(settings.redis_url)
    if client.llen(EVENTS_QUEUE):
        raise ServiceError(f"the {EVENTS_QUEUE} queue must be empty to make messages")
    web = create_app(settings).test_client()
    url = f"/callbacks/{settings.callback_tokens[0]}"
    conversations = -(-count // len(templates))
    for n in range(count):
        step, conversation = divmod(n, conversations)
        body = payloads.render(templates[step], f"{prefix}-{conversation}", 0)
        answer = web.post(url, data=body)
        if answer.status_code != 202:
            raise ServiceError(f"the receiver answered {answer.status_code}: {answer.json}")
    messages = client.lrange(EVENTS_QUEUE, 0, -1)
    client.delete(EVENTS_QUEUE)
    client.close()
    return list(reversed(messages))  # LPUSH puts the newest first


def push(client: redis.Redis, queue: str, messages: Iterable[bytes]) -> None:
    """Queue ``messages`` in order: Celery pops from the tail, we push onto the head."""
    batch: list[bytes] = []
    with client.pipeline(transaction=False) as pipe:
        for message in messages:
            batch.append(message)
            if len(batch) == _PUSH_CHUNK:
                pipe.lpush(queue, *batch)
                batch = []
        if batch:
            pipe.lpush(queue, *batch)
        pipe.execute()


def drained(client: redis.Redis, queues: Sequence[str]) -> bool:
    """Nothing waits in ``queues`` and nothing is taken but unacked (acks_late: all done)."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
        pipe.hlen(UNACKED)
        counts = pipe.execute()
    return not any(counts)


def drain_rate(
    client: redis.Redis, queues: Sequence[str], messages: list[bytes], timeout: float
) -> float:
    """Queue ``messages`` on the first of a ready worker's ``queues``; tasks per second until
    every queue is empty and the last message acked (the follow-ups the tasks sent included)."""
    started = time.monotonic()
    push(client, queues[0], messages)
    deadline = started + timeout
    # A message moves from the queue to the unacked hash in two steps: drained twice in a row.
    settled = 0
    while settled < 2:
        if time.monotonic() > deadline:
            raise ServiceError(f"{', '.join(queues)} did not drain within {timeout:.0f}s")
        settled = settled + 1 if drained(client, queues) else 0
        time.sleep(0.005)
    return len(messages) / (time.monotonic() - started)


def count_by_status(store: Store, prefix: str) -> dict[str, int]:
    """How many stored events of the conversations named ``prefix-…`` are in each status."""
    query = (
        select(Event.status, func.count())
        .where(Event.conversation_id.startswith(f"{prefix}-", autoescape=True))
        .group_by(Event.status)
    )
    with store.session() as session:
        return {status: count for status, count in session.execute(query).all()}


def processed_latencies(store: Store, prefix: str, expected: int, timeout: float) -> list[float]:
    """Once ``expected`` events of the run ``prefix`` are final, each one's seconds from when it
    was due to be posted to when it was processed."""
    deadline = time.monotonic() + timeout
    while True:
        counts = count_by_status(store, prefix)
        final = sum(n for status, n in counts.items() if status in EventStatus.FINAL)
        if final >= expected:
            break
        if time.monotonic() > deadline:
            raise ServiceError(f"only {final} of {expected} events were processed: {counts}")
        time.sleep(0.1)
    query = select(Event.body, Event.processed_at, Event.status).where(
        Event.conversation_id.startswith(f"{prefix}-", autoescape=True)
    )
    with store.session() as session:
        rows = session.execute(query).all()
    latencies = []
    for body, processed_at, status in rows:
        if status != EventStatus.PROCESSED:
            raise ServiceError(f"an event ended {status}, not processed")
        due = payloads.sent_at(body)
        if due is not None:
            latencies.append(_epoch(processed_at) - due)
    return sorted(latencies)


def _epoch(at: datetime) -> float:
    return at.timestamp()
