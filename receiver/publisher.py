"""Durable enqueue: claim the event's key and push its Celery message in one Redis round trip.

Celery's ``apply_async`` rebuilds its whole message machinery per call and costs more than the
rest of the request together, so the receiver writes the message Celery's Redis transport
(kombu) would write, from a template built once per process. A test with a real worker guards
the format. The key claim and the push run in one Lua script: either both happen or neither,
so a crash between them cannot leave a key claimed for an event that was never queued.
"""

from __future__ import annotations

import hashlib

import redis

from schemas.messages import EVENTS_QUEUE, PROCESS_EVENT, EventMessage, celery_envelope

DEDUP_PREFIX = "tavus:seen:"

# KEYS[1]: the dedup key; KEYS[2]: the queue list.
# ARGV[1]: this event's id; ARGV[2]: key TTL in seconds; ARGV[3]: the message.
# Returns the first event's id for a repeat, or nil once the message is queued.
_CLAIM_AND_PUSH = """
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('LPUSH', KEYS[2], ARGV[3])
return false
"""


def dedup_key(event_key: str) -> str:
    """Event keys come from the payload; hash them to a bounded Redis key."""
    return DEDUP_PREFIX + hashlib.blake2b(event_key.encode(), digest_size=16).hexdigest()


class Publisher:
    """Publishes events to the ``events`` queue, at most once per event key."""

    def __init__(self, client: redis.Redis, dedup_ttl_seconds: int) -> None:
        self._client = client
        self._ttl = dedup_ttl_seconds
        self._claim_and_push = client.register_script(_CLAIM_AND_PUSH)

    def publish(self, message: EventMessage) -> str | None:
        """Queue ``message`` unless its key was seen; return the first event's id for a repeat.

        Raises ``redis.RedisError`` when Redis cannot take it: the caller decides what then.
        """
        envelope = celery_envelope(PROCESS_EVENT, message["event_id"], [message], EVENTS_QUEUE)
        keys = [dedup_key(message.get("claim_key", message["event_key"])), EVENTS_QUEUE]
        ttl = message.get("claim_ttl", self._ttl)
        first = self._claim_and_push(keys=keys, args=[message["event_id"], ttl, envelope])
        if first is None:
            return None
        first_id = first.decode()
        # Our own id: this very message was pushed by an earlier attempt whose answer was lost
        # (a retried command, or a spooled copy of an event Redis took just before it went down).
        return None if first_id == message["event_id"] else first_id

    def ping(self) -> bool:
        return bool(self._client.ping())
