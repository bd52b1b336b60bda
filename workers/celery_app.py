"""The Celery app: broker, queues, routing and the delivery guarantees every task relies on.

``celery -A workers.celery_app worker`` imports this module; settings are read here, once.
"""

from __future__ import annotations

import ssl

from celery import Celery
from kombu import Exchange, Queue

from schemas.messages import QUEUES, TASK_ROUTES
from schemas.settings import Settings, SettingsError

TASK_MODULES = ("workers.tasks.events", "workers.tasks.storage", "workers.tasks.alerts")


def create_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise SettingsError("REDIS_URL is not set (tavus-callbacks dev starts a Redis for you)")
    app = Celery("tavus_callbacks", broker=settings.redis_url, include=list(TASK_MODULES))
    app.conf.update(
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_routes=TASK_ROUTES,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # At-least-once: ack after the task ran, and hand back a task whose process died.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            # Look for messages taken but never acked (a worker that lost Redis or died) every
            # 10 s, not kombu's default of every 100 s: they come back after the visibility
            # timeout plus at most this.
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
    )
    if settings.redis_url.startswith("rediss://") and not settings.redis_tls_verify:
        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_NONE}
    app.conf.tavus_settings = settings
    return app


celery = create_celery(Settings.from_env())
