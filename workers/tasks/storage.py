"""``tavus.storage.verify_recording``: check that a conversation's recording is in its bucket."""

from __future__ import annotations

import logging

from celery import Task

from schemas.messages import VERIFY_RECORDING
from workers import metrics, retry
from workers.celery_app import celery
from workers.storage import verification
from workers.store.db import store_for
from workers.tasks.events import send_task

log = logging.getLogger(__name__)


@celery.task(name=VERIFY_RECORDING, bind=True, max_retries=None, acks_late=True)
def verify_recording(self: Task, conversation_id: str, round_: int | None = None) -> str:
    """One attempt; ``round_`` is the recording_ready round it belongs to (None: the current).

    Idempotent: a redelivery of a finished round, or a task of a round a newer recording_ready
    replaced, changes nothing. A store or broker fault is retried until it passes; anything
    else that escapes ends the round as ``error``, with its alert (never ``pending`` for good).
    """
    settings = celery.conf.tavus_settings
    store = store_for(settings.database_url)
    outcome = retry.run(
        self,
        "storage",
        conversation_id,
        lambda: verification.verify(store, settings, conversation_id, round_, send_task),
        lambda exc, failures: verification.dead_letter(
            store, conversation_id, round_, exc, failures, send_task
        ),
        settings,
    )
    if outcome is not None and outcome.retry_in is not None:
        metrics.VERIFICATIONS.labels("retrying").inc()
        # The attempt count and the wait window live in the store, not in Celery's retry count.
        retry.later(self, outcome.retry_in, settings)
    if outcome is None:  # the dead letter itself could not be recorded (logged CRITICAL)
        return "unrecorded"
    metrics.VERIFICATIONS.labels(outcome.status).inc()
    return outcome.status
