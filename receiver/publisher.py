"""Durable enqueue: claim the event's key and queue its message in one Redis round trip
(``schemas.broker.TaskQueue.send_once``), so that an event is queued at most once per key; with
``REDIS_MIN_REPLICAS``, confirmed by that many replicas in the same round trip."""

from __future__ import annotations

import hashlib

import redis

from schemas.broker import TaskQueue
from schemas.crypto import Cipher
from schemas.messages import PROCESS_EVENT, EventMessage

DEDUP_PREFIX = "tavus:seen:"


def dedup_key(event_key: str) -> str:
    """Event keys come from the payload; hash them to a bounded Redis key."""
    return DEDUP_PREFIX + hashlib.blake2b(event_key.encode(), digest_size=16).hexdigest()


class Publisher:
    """Publishes events to the ``events`` queue, at most once per event key."""

    def __init__(
        self,
        client: redis.Redis,
        dedup_ttl_seconds: int,
        min_replicas: int = 0,
        replica_timeout_ms: int = 100,
        cipher: Cipher | None = None,
    ) -> None:
        # The intake seals each body as it builds the message (the spool must hold it sealed
        # too), so its publisher has no cipher; `import`'s seals here.
        self._queue = TaskQueue(client, min_replicas, replica_timeout_ms, cipher)
        self._ttl = dedup_ttl_seconds

    def publish(self, message: EventMessage) -> str | None:
        """Queue ``message`` unless its key was seen; return the first event's id for a repeat.

        Raises ``redis.RedisError`` when Redis cannot take it, or ``NotReplicated`` (one) when
        fewer replicas than asked confirmed it: the caller decides what then.
        """
        event_id = message["event_id"]
        first_id = self._queue.send_once(
            PROCESS_EVENT,
            [message],
            event_id,
            dedup_key(message.get("claim_key", message["event_key"])),
            message.get("claim_ttl", self._ttl),
        )
        # Our own id: this very message was pushed by an earlier attempt whose answer was lost
        # (a retried command, or a spooled copy of an event Redis took just before it went down).
        return None if first_id == event_id else first_id
