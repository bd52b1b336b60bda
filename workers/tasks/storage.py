"""``tavus.storage.verify_recording``: check that a conversation's recording is in its bucket."""

from __future__ import annotations

import logging

from schemas.messages import VERIFY_RECORDING
from workers import metrics
from workers.storage import verification
from workers.tasks.base import StageTask, stage_task
from workers.tasks.events import send_task

log = logging.getLogger(__name__)


@stage_task(VERIFY_RECORDING, "storage")
def verify_recording(self: StageTask, conversation_id: str, round_: int | None = None) -> str:
    """One attempt; ``round_`` is the recording_ready round it belongs to (None: the current).

    Idempotent: a redelivery of a finished round, or a task of a round a newer recording_ready
    replaced, changes nothing. A store or broker fault is retried until it passes; anything
    else that escapes ends the round as ``error``, with its alert (never ``pending`` for good).
    """
    settings, store = self.settings, self.store
    outcome = self.guarded(
        conversation_id,
        lambda: verification.verify(store, settings, conversation_id, round_, send_task),
        lambda exc, failures: verification.dead_letter(
            store, conversation_id, round_, exc, failures, send_task
        ),
    )
    if outcome is None:  # the dead letter itself could not be recorded (logged CRITICAL)
        return "unrecorded"
    if outcome.retry_in is not None:
        metrics.VERIFICATIONS.labels("retrying").inc()
        # The attempt count and the wait window live in the store, not in Celery's retry count.
        self.again_in(outcome.retry_in)
        return outcome.status
    metrics.VERIFICATIONS.labels(outcome.status).inc()
    return outcome.status
