"""Follow-up tasks (verify a recording, raise an alert, forward an event) queued as the receiver
queues events: one LPUSH of a lean Celery message (``schemas.messages.celery_envelope``).

Celery's ``send_task`` rebuilds its message machinery on every call: 10-13% of what a worker
spent on an event that had a follow-up. The message is the one a real worker consumes
(tests/test_celery_app.py), routed as ``TASK_ROUTES`` route it. A Redis fault raises
``redis.ConnectionError``, transient under the one retry policy: the event's outbox keeps the
tasks, and the redelivered event sends them again.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import redis

from schemas.messages import celery_envelope, queue_for
from schemas.settings import Settings


class TaskPublisher:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def send(self, task_name: str, args: list[Any], task_id: str | None = None) -> None:
        queue = queue_for(task_name)
        envelope = celery_envelope(task_name, task_id or str(uuid.uuid4()), args, queue)
        self._client.lpush(queue, envelope)


_PUBLISHERS: dict[tuple[int, str], TaskPublisher] = {}


def publisher_for(settings: Settings) -> TaskPublisher:
    """The process's publisher, made on first use (after any fork: a connection must not cross
    one)."""
    key = (os.getpid(), settings.redis_url or "")
    if key not in _PUBLISHERS:
        _PUBLISHERS[key] = TaskPublisher(_client(settings))
    return _PUBLISHERS[key]


def _client(settings: Settings) -> redis.Redis:
    options: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
    if (settings.redis_url or "").startswith("rediss://") and not settings.redis_tls_verify:
        options["ssl_cert_reqs"] = "none"  # as the broker connection (celery_app: CERT_NONE)
    return redis.Redis.from_url(settings.redis_url, **options)
