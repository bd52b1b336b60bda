"""``tavus.events.process``: store one event and run its handler."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from schemas.messages import PROCESS_EVENT, EventMessage
from workers import processing, retry
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
    """Handler failures are counted on the event (``MAX_EVENT_ATTEMPTS``); whatever escapes
    ``process`` (the store, the broker, a bug before the event is stored) goes through the one
    retry policy, and in the end to ``processing.dead_letter``: this message may be the event's
    only copy, so it is never acked before its outcome is in the store."""
    settings = celery.conf.tavus_settings
    store = store_for(settings.database_url)
    outcome = retry.run(
        self,
        "events",
        message.get("event_id", "?") if isinstance(message, dict) else "?",
        lambda: processing.process(
            store,
            message,
            send_task,
            settings.max_event_attempts,
            AlertPolicy.from_settings(settings),
        ),
        lambda exc, failures: processing.dead_letter(store, message, exc, failures, send_task),
        settings,
    )
    if outcome.retry_in is not None:
        # The attempt count lives in the store, so Celery's own retry limit is not needed.
        retry.later(self, outcome.retry_in, settings)
    return outcome.status
