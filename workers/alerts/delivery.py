"""Raising an alert and delivering it, one channel at a time. Knows nothing of Celery: the
tasks in ``workers.tasks.alerts`` wrap these two functions and schedule what they ask for.

Raising stores the alert once per cause and answers which channels still need a delivery.
Delivering claims one (alert, channel), sends it through the channel's notifier, and records
the attempt: delivered, retrying (transient error, with a backoff) or failed (permanent error,
or the attempts ran out). A channel that fails never holds up another: each is its own task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import tracing
from schemas.settings import Settings
from workers import retry
from workers.errors import Transient
from workers.store.db import Store

from . import ledger
from .notifiers import (
    PermanentDeliveryError,
    TransientDeliveryError,
    configured_channels,
    notifier_for,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # delivered, retrying, failed; or, when nothing was sent: sending, unknown
    retry_in: float | None = None  # seconds until this task should run again


def raise_alert(store: Store, message: Any, settings: Settings) -> tuple[str, list[str]]:
    """Store ``message`` once per cause; return its cause key and the channels to deliver to."""
    alert = ledger.normalise(message)
    channels = configured_channels(settings, alert["severity"])
    with store.begin() as connection:
        pending = ledger.record_alert(connection, alert, channels, datetime.now(UTC))
    return alert["cause_key"], pending


def deliver(
    store: Store,
    cause_key: str,
    channel: str,
    settings: Settings,
    carried: dict[str, Any] | None = None,
) -> Outcome:
    """Send the alert of ``cause_key`` to ``channel`` unless it was sent or is being sent.

    ``carried``: an attempt that was sent while the store was away (``Unrecorded``), recorded
    first, so that it is not sent again once its lease runs out.
    """
    with store.session() as session:
        if carried is not None:
            recorded = carried["sent"]
            ledger.finish(session, *recorded, datetime.now(UTC))
        claim = ledger.claim(session, cause_key, channel, lease(settings), datetime.now(UTC))
    if isinstance(claim, ledger.Busy):
        retry_in = None if claim.retry_in is None else min(claim.retry_in, _cap(settings))
        return Outcome(claim.status, retry_in)
    error: str | None = None
    retry_in: float | None = None
    try:
        notifier = notifier_for(channel, settings)
        if notifier is None:
            raise PermanentDeliveryError(f"the {channel} channel is not configured any more")
        attributes = {"tavus.alert.channel": channel, "tavus.attempt": claim.attempt}
        with tracing.span(f"alert {channel}", "client", attributes):
            notifier.send(claim.alert)
        status = "delivered"
    except PermanentDeliveryError as exc:
        status, error = "failed", str(exc)
    except TransientDeliveryError as exc:
        status, error = "retrying", str(exc)
        retry_in = retry.delay(
            claim.attempt, _cap(settings), retry.DELIVERY_RETRY_BASE_SECONDS, exc.retry_after
        )
    except Exception as exc:  # a boundary: a notifier's own bug is recorded, and retried
        # Only the type: a library's message may quote a URL that is itself a secret.
        status, error = "retrying", f"unexpected {type(exc).__name__}"
        retry_in = retry.delay(claim.attempt, _cap(settings), retry.DELIVERY_RETRY_BASE_SECONDS)
    if status == "retrying" and claim.attempt >= settings.alert_delivery_attempts:
        status, retry_in = "failed", None
        error = f"{error} (gave up after {claim.attempt} attempts)"
    _record(store, [claim.delivery_id, claim.attempt, status, error], retry_in)
    log.log(
        logging.WARNING if error else logging.INFO,
        "alert %s via %s: attempt %d %s%s",
        cause_key,
        channel,
        claim.attempt,
        status,
        f" ({error})" if error else "",
    )
    return Outcome(status, retry_in)


def _record(store: Store, sent: list[Any], retry_in: float | None) -> None:
    """Record an attempt that was made. The store failing now must not make it a lost attempt
    (sent again after its lease, a second Slack message): the retry carries it, to record it."""
    try:
        with store.session() as session:
            ledger.finish(session, *sent, datetime.now(UTC))
    except Exception as exc:
        if not retry.is_transient(exc):
            raise
        raise Transient(
            f"the store could not record attempt {sent[1]}: {type(exc).__name__}",
            retry_after=retry_in,
            carry={"sent": sent},
        ) from exc


def lease(settings: Settings) -> timedelta:
    """How long a claim holds a delivery: longer than any send can take (SMTP makes several
    round trips, each up to the timeout)."""
    return timedelta(seconds=10 * settings.alert_timeout_seconds + 30)


def _cap(settings: Settings) -> float:
    return retry.cap_seconds(settings.visibility_timeout_seconds)


def give_up(
    store: Store, cause_key: str, channel: str, error: BaseException, attempts: int
) -> Outcome:
    """The delivery task kept failing outside the notifier (a bug, a bad row): mark the
    delivery ``failed`` with the reason, so that ``alerts`` shows it and nothing waits on it."""
    reason = f"delivery task failed: {type(error).__name__}"  # no message: it may quote a URL
    with store.session() as session:
        found = ledger.give_up(session, cause_key, channel, reason, datetime.now(UTC))
    log.error(
        "alert %s via %s dead-lettered after %d attempts: %s", cause_key, channel, attempts, reason
    )
    return Outcome(found)
