"""``tavus.events.process``: store one event and run its handler."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from schemas.messages import PROCESS_EVENT, EventMessage
from workers import processing
from workers.alerts.rules import AlertPolicy
from workers.celery_app import celery
from workers.store.db import store_for

log = logging.getLogger(__name__)


def send_task(name: str, args: list[Any]) -> None:
    celery.send_task(name, args=args)


@celery.task(name=PROCESS_EVENT, bind=True, max_retries=None, acks_late=True)
def process_event(self: Task, message: EventMessage) -> str:
    settings = celery.conf.tavus_settings
    store = store_for(settings.database_url)
    outcome = processing.process(
        store, message, send_task, settings.max_event_attempts, AlertPolicy.from_settings(settings)
    )
    if outcome.retry_in is not None:
        # The attempt count lives in the store, so Celery's own retry limit is not needed.
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
