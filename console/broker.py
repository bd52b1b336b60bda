"""The console's view of Redis: queue depths, and a publisher for replays.

Queue depths are read the way kombu's Redis transport stores queues: a list per queue (one more
per priority step) and one ``unacked`` hash of messages taken by a worker and not yet acked.
Replays are sent as the workers' own messages, by task name, through a Celery app that knows
nothing of the tasks (the console never imports them).
"""

from __future__ import annotations

import ssl
from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue

from schemas.messages import PROCESS_EVENT, QUEUES, TASK_ROUTES, EventMessage
from schemas.settings import Settings

# The Celery queues (DESIGN.md: the worker's -Q), whether or not this build routes to all yet.
QUEUE_NAMES = tuple(dict.fromkeys((*QUEUES, "events", "storage", "alerts", "forward", "hooks")))
PRIORITY_SEPARATOR = "\x06\x16"  # kombu: "<queue>\x06\x16<priority>" for priorities above 0
PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY = "unacked"


def redis_client(settings: Settings) -> redis.Redis:
    """Short timeouts: a stalled Redis fails a page, never hangs it."""
    options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 1.0}
    if settings.redis_url.startswith("rediss://") and not settings.redis_tls_verify:
        options["ssl_cert_reqs"] = "none"  # Heroku Redis presents a self-signed certificate
    return redis.Redis.from_url(settings.redis_url, **options)


def queue_depths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting per queue, plus ``unacked``: taken by a worker, not yet done."""
    with client.pipeline(transaction=False) as pipe:
        for name in QUEUE_NAMES:
            pipe.llen(name)
            for step in PRIORITY_STEPS:
                pipe.llen(f"{name}{PRIORITY_SEPARATOR}{step}")
        pipe.hlen(UNACKED_KEY)
        counts = pipe.execute()
    per_queue = 1 + len(PRIORITY_STEPS)
    depths = {
        name: sum(counts[i * per_queue : (i + 1) * per_queue]) for i, name in enumerate(QUEUE_NAMES)
    }
    depths["unacked"] = counts[-1]
    return depths


class TaskSender:
    """Sends tasks by name, as the receiver and ``replay`` do; the Celery app is built on first
    use, so a console that never replays never opens a broker connection."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._celery: Celery | None = None

    def send(self, name: str, args: list[Any], task_id: str | None = None) -> None:
        if self._celery is None:
            self._celery = _publishing_app(self._settings)
        self._celery.send_task(name, args=args, task_id=task_id)

    def publish_event(self, message: EventMessage) -> None:
        """``replay``'s Publish: the event id is the task id, as the receiver sends it."""
        self.send(PROCESS_EVENT, [message], task_id=message["event_id"])


def _publishing_app(settings: Settings) -> Celery:
    app = Celery("tavus_console", broker=settings.redis_url)
    app.conf.update(
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_routes=TASK_ROUTES,
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        # One try, quickly: a person clicking Replay wants an answer, not a hang.
        broker_transport_options={"max_retries": 1, "socket_timeout": 2.0},
    )
    if settings.redis_url.startswith("rediss://"):
        verify = ssl.CERT_REQUIRED if settings.redis_tls_verify else ssl.CERT_NONE
        app.conf.broker_use_ssl = {"ssl_cert_reqs": verify}
    return app
