"""``tavus.events.process``: store one event and run its handler."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from schemas.messages import PROCESS_EVENT, EventMessage
from workers import forwarding, processing
from workers.alerts.rules import AlertPolicy
from workers.celery_app import celery
from workers.store.db import store_for

log = logging.getLogger(__name__)


def send_task(name: str, args: list[Any]) -> None:
    celery.send_task(name, args=args)


def publish_event(message: EventMessage) -> None:
    """Queue one event for processing, as the receiver does (reconciliation, replay)."""
    celery.send_task(PROCESS_EVENT, args=[message], task_id=message["event_id"])


@celery.task(name=PROCESS_EVENT, bind=True, max_retries=None, acks_late=True)
def process_event(self: Task, message: EventMessage) -> str:
    settings = celery.conf.tavus_settings
    store = store_for(settings.database_url)
    try:
        outcome = processing.process(
            store,
            message,
            send_task,
            settings.max_event_attempts,
            AlertPolicy.from_settings(settings),
        )
    except Exception as exc:
        # Not the handler (its failures are counted in the store) but the store itself or the
        # broker: nothing could be recorded, and this message may be the event's only copy, so
        # it is retried for as long as it takes, never dropped.
        delay = processing.backoff(self.request.retries + 1, settings.max_countdown_seconds)
        log.error("event %s not processed, retry in %.0fs: %r", message["event_id"], delay, exc)
        raise self.retry(exc=exc, countdown=delay) from exc
    for task in forwarding.tasks_for(outcome.event_id, message, outcome.status, settings):
        send_task(task["name"], task["args"])  # after the commit, like the event's outbox
    if outcome.retry_in is not None:
        # The attempt count lives in the store, so Celery's own retry limit is not needed.
        raise self.retry(countdown=min(outcome.retry_in, settings.max_countdown_seconds))
    return outcome.status
