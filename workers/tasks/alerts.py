"""``tavus.alerts.raise`` and ``tavus.alerts.deliver``: an alert stored once per cause, then one
delivery task per channel, each retried on its own."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from schemas.messages import DELIVER_ALERT, RAISE_ALERT
from workers import metrics
from workers.alerts import delivery, ledger
from workers.alerts.ledger import InvalidAlert
from workers.celery_app import celery
from workers.store.db import store_for

log = logging.getLogger(__name__)

# The store being briefly unreachable is worth waiting for; anything else is the code's fault.
STORE_RETRIES = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
}


@celery.task(name=RAISE_ALERT, bind=True, acks_late=True, max_retries=20, **STORE_RETRIES)
def raise_alert(self: Task, message: Any) -> str:
    settings = celery.conf.tavus_settings
    try:
        cause_key, channels = delivery.raise_alert(
            store_for(settings.database_url), message, settings
        )
    except InvalidAlert as exc:
        log.error("alert dropped: %s", exc)
        return "invalid"
    metrics.alert_raised(ledger.normalise(message)["severity"])
    # A repeat (the same cause, or this message redelivered) sends these again: each delivery
    # task finds its channel done, or being done, and sends nothing twice.
    for channel in channels:
        celery.send_task(DELIVER_ALERT, args=[cause_key, channel])
    return "raised"


@celery.task(name=DELIVER_ALERT, bind=True, acks_late=True, max_retries=None, **STORE_RETRIES)
def deliver_alert(self: Task, cause_key: str, channel: str) -> str:
    settings = celery.conf.tavus_settings
    outcome = delivery.deliver(store_for(settings.database_url), cause_key, channel, settings)
    metrics.alert_delivery(channel, outcome.status)
    if outcome.status == "failed":
        metrics.dead_letter(DELIVER_ALERT)
    if outcome.retry_in is not None:
        # The attempt count lives in the store, so Celery's own retry limit is not needed.
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
