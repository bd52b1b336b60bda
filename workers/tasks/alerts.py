"""``tavus.alerts.raise`` and ``tavus.alerts.deliver``: an alert stored once per cause, then one
delivery task per channel, each retried on its own, under the one policy (``workers.retry``)."""

from __future__ import annotations

import logging
from typing import Any

from schemas.messages import DELIVER_ALERT, RAISE_ALERT, opened_alert
from workers import metrics, retry
from workers.alerts import delivery, ledger
from workers.alerts.ledger import InvalidAlert
from workers.alerts.notifiers import NOTIFIERS
from workers.tasks.base import StageTask, stage_task
from workers.tasks.events import send_task

log = logging.getLogger(__name__)


@stage_task(RAISE_ALERT, "alerts", "alert_delivery_attempts")
def raise_alert(self: StageTask, message: Any) -> str:
    settings, store = self.settings, self.store

    def work() -> str:
        plain = opened_alert(message, settings.cipher)  # sealed in Redis (ENCRYPTION_KEYS)
        try:
            cause_key, channels = delivery.raise_alert(store, plain, settings)
        except InvalidAlert as exc:
            # Nothing to store it under: said once, loudly, and counted.
            retry.COUNTS["alerts", "invalid"] += 1
            log.error("alert dropped: %s", exc)
            return "invalid"
        metrics.alert_raised(ledger.normalise(plain)["severity"])
        # A repeat (the same cause, or this message redelivered) sends these again: each
        # delivery task finds its channel done, or being done, and sends nothing twice.
        for channel in channels:
            send_task(DELIVER_ALERT, [cause_key, channel])
        return "raised"

    def dead_letter(exc: BaseException, failures: int) -> str:
        # The alerts table is where it would be recorded; the log is the last place left.
        log.critical("alert %r could not be raised after %d attempts: %r", message, failures, exc)
        return "failed"

    return self.guarded(_cause(message), work, dead_letter)


@stage_task(DELIVER_ALERT, "alerts", "alert_delivery_attempts")
def deliver_alert(self: StageTask, cause_key: str, channel: str) -> str:
    settings, store = self.settings, self.store
    outcome = self.guarded(
        f"{cause_key} via {channel}",
        lambda: delivery.deliver(store, cause_key, channel, settings, self.carried()),
        lambda exc, failures: delivery.give_up(store, cause_key, channel, exc, failures),
    )
    metrics.alert_delivery(channel, outcome.status, NOTIFIERS)
    if outcome.status == "failed":
        self.dead_lettered()
    if outcome.retry_in is not None:
        # The attempt count lives in the store, so Celery's own retry limit is not needed.
        self.again_in(outcome.retry_in)
    return outcome.status


def _cause(message: Any) -> str:
    return str(message.get("cause_key")) if isinstance(message, dict) else "?"
