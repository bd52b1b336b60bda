"""``tavus.events.process``: store one event and run its handler."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.exceptions import Reject, Retry

from schemas.broker import task_queue_for
from schemas.crypto import CryptoError
from schemas.messages import PROCESS_EVENT, EventMessage, opened_event
from workers import forwarding, metrics, processing
from workers.alerts.rules import AlertPolicy
from workers.celery_app import celery
from workers.store.models import EventStatus
from workers.tasks.base import StageTask, stage_task

log = logging.getLogger(__name__)


def send_task(name: str, args: list[Any]) -> None:
    """Queue a follow-up task: one LPUSH (``schemas.broker``), not Celery's ``send_task``."""
    task_queue_for(celery.conf.tavus_settings).send(name, args)


def publish_event(message: EventMessage) -> None:
    """Queue one event for processing, as the receiver does (reconciliation, replay)."""
    task_queue_for(celery.conf.tavus_settings).publish_event(message)


def _opened(message: EventMessage, cipher: Any) -> EventMessage:
    """The message with its body opened; as it is when its key is not held (a dead letter then
    keeps the sealed body, and says which key it needs)."""
    try:
        return opened_event(message, cipher) if isinstance(message, dict) else message
    except CryptoError:
        return message


def _send_forwards(outcome: processing.Outcome, message: EventMessage, settings: Any) -> None:
    for task in forwarding.tasks_for(outcome.event_id, message, outcome.status, settings):
        send_task(task["name"], task["args"])


@stage_task(PROCESS_EVENT, "events")
def process_event(self: StageTask, message: EventMessage) -> str:
    """Handler failures are counted on the event (``MAX_EVENT_ATTEMPTS``); whatever escapes
    ``process`` (the store, the broker, a bug before the event is stored) goes through the one
    retry policy, and in the end to ``processing.dead_letter``: this message may be the event's
    only copy, so it is never acked before its outcome is in the store."""
    settings, store = self.settings, self.store
    started = time.perf_counter()
    # Its body sealed (ENCRYPTION_KEYS) as it rested in Redis; opened here, in this task only:
    # the message itself stays sealed, for a retry to queue again.
    plain = _opened(message, settings.cipher)
    try:
        outcome = self.guarded(
            message.get("event_id", "?") if isinstance(message, dict) else "?",
            lambda: processing.process(
                store,
                # Opened once; when it could not be, again here, to fail (MissingKey) inside the
                # policy: retried, then dead-lettered with its sealed body.
                plain if plain is not message else opened_event(message, settings.cipher),
                send_task,
                self.max_attempts(),
                AlertPolicy.from_settings(settings),
            ),
            lambda exc, failures: processing.dead_letter(store, plain, exc, failures, send_task),
        )
    except (Retry, Reject):
        metrics.event_processed(message, "retrying", started)
        raise
    if outcome is None:  # the dead letter itself could not be recorded (logged CRITICAL)
        metrics.event_processed(message, "error", started)
        return "unrecorded"
    if outcome.alert is not None:  # raised in the event's transaction, which has committed
        metrics.alert_raised(outcome.alert)
    # After the commit, like the event's outbox, and under the same policy: a broker fault here
    # retries this message (its event, final now, only sends them again) rather than escaping
    # as a failure Celery acks, which would lose the forwards and hooks for good. Deliveries
    # are unique per event and destination: a second send of one is a no-op.
    self.guarded(
        outcome.event_id,
        lambda: _send_forwards(outcome, message, settings),
        lambda exc, failures: log.critical(
            "event %s: its forwards could not be queued: %r", outcome.event_id, exc
        ),
    )
    if outcome.retry_in is not None:
        metrics.event_processed(message, "retrying", started)
        self.again_in(outcome.retry_in)
        return outcome.status
    metrics.event_processed(message, outcome.status, started)
    if outcome.status == EventStatus.FAILED:
        self.dead_lettered()
    return outcome.status
