"""Durable enqueue: claim the event's key and push its Celery message in one Redis round trip.

Celery's ``apply_async`` rebuilds its whole message machinery per call and costs more than the
rest of the request together, so the receiver writes the message Celery's Redis transport
(kombu) would write, from a template built once per process. A test with a real worker guards
the format. The key claim and the push run in one Lua script: either both happen or neither,
so a crash between them cannot leave a key claimed for an event that was never queued.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import uuid
from typing import Any

import orjson
import redis

from schemas.messages import EVENTS_QUEUE, PROCESS_EVENT, EventMessage

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


def celery_envelope(task_name: str, task_id: str, args: list[Any], queue: str) -> bytes:
    """The JSON that kombu's Redis transport stores for one Celery protocol-2 task message."""
    body = orjson.dumps([args, {}, _NO_WORKFLOW])
    headers = {
        **_HEADERS,
        "task": task_name,
        "id": task_id,
        "root_id": task_id,
        "argsrepr": f"[<{task_name} {task_id}>]",
    }
    properties = {
        **_PROPERTIES,
        "correlation_id": task_id,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "delivery_tag": str(uuid.uuid4()),
    }
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )


_NO_WORKFLOW = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_HEADERS = {
    "lang": "py",
    "shadow": None,
    "eta": None,
    "expires": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "timelimit": [None, None],
    "parent_id": None,
    "kwargsrepr": "{}",
    "origin": f"{os.getpid()}@{socket.gethostname()}",
    "ignore_result": True,
    "replaced_task_nesting": 0,
    "stamped_headers": None,
    "stamps": {},
}
_PROPERTIES = {"reply_to": "", "delivery_mode": 2, "priority": 0, "body_encoding": "base64"}


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
