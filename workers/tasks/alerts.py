"""``tavus.alerts.raise`` and ``tavus.alerts.deliver``: an alert stored once per cause, then one
delivery task per channel, each retried on its own, under the one policy (``workers.retry``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from schemas.messages import DELIVER_ALERT, RAISE_ALERT
from workers import metrics, retry
from workers.alerts import delivery, ledger
from workers.alerts.ledger import InvalidAlert
from workers.celery_app import celery
from workers.store.db import store_for
from workers.tasks.events import send_task

log = logging.getLogger(__name__)


@celery.task(name=RAISE_ALERT, bind=True, acks_late=True, max_retries=None)
def raise_alert(self: Task, message: Any) -> str:
    settings = celery.conf.tavus_settings
    store = store_for(settings.database_url)

    def work() -> str:
        try:
            cause_key, channels = delivery.raise_alert(store, message, settings)
        except InvalidAlert as exc:
            # Nothing to store it under: said once, loudly, and counted.
            retry.COUNTS["alerts", "invalid"] += 1
            log.error("alert dropped: %s", exc)
            return "invalid"
        metrics.alert_raised(ledger.normalise(message)["severity"])
        # A repeat (the same cause, or this message redelivered) sends these again: each
        # delivery task finds its channel done, or being done, and sends nothing twice.
        for channel in channels:
            send_task(DELIVER_ALERT, [cause_key, channel])
        return "raised"

    def dead_letter(exc: BaseException, failures: int) -> str:
        # The alerts table is where it would be recorded; the log is the last place left.
        log.critical("alert %r could not be raised after %d attempts: %r", message, failures, exc)
        return "failed"

    return retry.run(self, "alerts", _cause(message), work, dead_letter, settings)


@celery.task(name=DELIVER_ALERT, bind=True, acks_late=True, max_retries=None)
def deliver_alert(self: Task, cause_key: str, channel: str) -> str:
    settings = celery.conf.tavus_settings
    store = store_for(settings.database_url)
    outcome = retry.run(
        self,
        "alerts",
        f"{cause_key} via {channel}",
        lambda: delivery.deliver(store, cause_key, channel, settings),
        lambda exc, failures: delivery.give_up(store, cause_key, channel, exc, failures),
        settings,
    )
    metrics.alert_delivery(channel, outcome.status)
    if outcome.status == "failed":
        metrics.dead_letter(DELIVER_ALERT)
    if outcome.retry_in is not None:
        # The attempt count lives in the store, so Celery's own retry limit is not needed.
        retry.later(self, outcome.retry_in, settings)
    return outcome.status


def _cause(message: Any) -> str:
    return str(message.get("cause_key")) if isinstance(message, dict) else "?"
