"""The alerts' side of the store: each alert once per cause, each channel's delivery once, and
every attempt at it.

A delivery is claimed before it is sent: the claim counts the attempt and holds the delivery for
a lease, so a second task for the same (alert, channel) waits instead of sending a copy, and a
worker that died mid-send loses its hold when the lease runs out. On PostgreSQL the claim locks
the row (FOR UPDATE); on SQLite every write transaction is already serialised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schemas.messages import SEVERITIES, AlertMessage
from workers import ledger, lifecycle
from workers.ledger import Busy
from workers.store.models import Alert, AlertAttempt, AlertDelivery, DeliveryStatus

from . import notifiers

MAX_CAUSE_KEY = 512


class InvalidAlert(ValueError):
    """An alert message that cannot be stored (it names no cause)."""


def normalise(message: Any) -> AlertMessage:
    """Accept any ``AlertMessage`` another task sends; refuse only what cannot be kept once.

    An unknown severity becomes "error" rather than losing the alert; the given one is kept
    in the facts.
    """
    if not isinstance(message, dict):
        raise InvalidAlert(f"expected an AlertMessage object, got {type(message).__name__}")
    cause_key = str(message.get("cause_key") or "").strip()
    if not cause_key or len(cause_key) > MAX_CAUSE_KEY:
        raise InvalidAlert(f"cause_key must be 1 to {MAX_CAUSE_KEY} characters")
    facts = message.get("facts") if isinstance(message.get("facts"), dict) else {}
    severity = message.get("severity")
    if severity not in SEVERITIES:
        facts = {**facts, "given_severity": severity}
        severity = "error"
    return AlertMessage(
        cause_key=cause_key,
        severity=severity,
        title=" ".join(str(message.get("title") or cause_key).split()),
        text=str(message.get("text") or ""),
        conversation_id=message.get("conversation_id"),
        event_id=message.get("event_id"),
        facts=facts,
    )


def record_alert(
    connection: Connection, message: AlertMessage, channels: tuple[str, ...], now: datetime
) -> list[str]:
    """Store the alert unless its cause is stored; add a delivery per channel not yet there.

    Returns the channels whose delivery is not final yet: the ones to (re)send a task for.
    The first message of a cause is the one kept. An alert about an erased conversation is
    dropped: its text would bring it back.

    Core statements on ``connection``, in the caller's transaction: the ``tavus.alerts.raise``
    task's own, or the transaction of the event that raised it (``workers.processing``).
    """
    if lifecycle.erased(connection, message):
        return []
    statements = _RECORD[connection.dialect.name]
    new_id = str(uuid.uuid4())
    row = {
        "id": new_id,
        "cause_key": message["cause_key"],
        "severity": message["severity"],
        "title": message["title"],
        "text": message["text"],
        "conversation_id": message.get("conversation_id"),
        "event_id": message.get("event_id"),
        "facts": message.get("facts") or {},
        "raised_at": now,
    }
    # Inserted first: most causes are new. A cause raised before is locked instead, so that two
    # raises of one cause add its deliveries one after the other.
    alert_id = connection.execute(statements.add_alert, row).scalar()
    if alert_id is None:
        alert_id = connection.execute(_LOCK_ALERT, {"cause_key": message["cause_key"]}).scalar_one()
    if channels:
        pending = {"alert_id": alert_id, "status": DeliveryStatus.PENDING, "attempts": 0}
        connection.execute(
            statements.add_delivery, [{**pending, "channel": channel} for channel in channels]
        )
    if alert_id == new_id:  # new: its deliveries are the ones just added
        return list(channels)
    found = connection.execute(_DELIVERY_STATUSES, {"alert_id": alert_id})
    return [channel for channel, status in found if status not in DeliveryStatus.FINAL]


@dataclass(frozen=True)
class _Statements:
    """``record_alert``'s inserts on one dialect (``ON CONFLICT DO NOTHING``), built once."""

    add_alert: Insert  # RETURNING its id: the new row's, or nothing when the cause is stored
    add_delivery: Insert


_RECORD = {
    dialect.dialect.name: _Statements(
        dialect.insert(Alert.__table__).on_conflict_do_nothing().returning(Alert.__table__.c.id),
        dialect.insert(AlertDelivery.__table__).on_conflict_do_nothing(),
    )
    for dialect in (postgresql, sqlite)
}
_LOCK_ALERT = select(Alert.id).where(Alert.cause_key == bindparam("cause_key")).with_for_update()
_DELIVERY_STATUSES = select(AlertDelivery.channel, AlertDelivery.status).where(
    AlertDelivery.alert_id == bindparam("alert_id")
)


@dataclass(frozen=True)
class Claim:
    """This worker may send: attempt ``attempt`` of delivery ``delivery_id``."""

    delivery_id: int
    attempt: int
    alert: notifiers.Alert


def claim(
    session: Session, cause_key: str, channel: str, lease: timedelta, now: datetime
) -> Claim | Busy:
    query = (
        select(AlertDelivery, Alert)
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(Alert.cause_key == cause_key, AlertDelivery.channel == channel)
        .with_for_update(of=AlertDelivery)
    )
    row = session.execute(query.execution_options(populate_existing=True)).first()
    if row is None:
        return Busy("unknown")
    delivery, alert = row
    if busy := ledger.held(delivery, now):
        return busy
    if ledger.was_lost(delivery):
        _attempt(session, delivery.id, delivery.attempts).outcome = "lost"
    ledger.begin(delivery, lease, now)
    session.add(
        AlertAttempt(
            delivery_id=delivery.id, number=delivery.attempts, started_at=now, outcome="sending"
        )
    )
    return Claim(delivery.id, delivery.attempts, _as_notifier_alert(alert))


def finish(
    session: Session, delivery_id: int, number: int, outcome: str, error: str | None, now: datetime
) -> None:
    """Record how attempt ``number`` ended: ``delivered``, ``retrying`` or ``failed``; once (a
    record retried after the store failed may find it done)."""
    attempt = _attempt(session, delivery_id, number)
    if attempt.finished_at is not None:
        return
    attempt.finished_at = now
    attempt.outcome = outcome
    attempt.error = error
    delivery = session.get(AlertDelivery, delivery_id, with_for_update=True)
    if delivery.attempts != number:
        return  # our lease ran out and another worker took over: its result stands
    DeliveryStatus.settle(delivery, outcome, error, now)


def give_up(session: Session, cause_key: str, channel: str, error: str, now: datetime) -> str:
    """Mark a delivery ``failed`` for good (its task was dead-lettered); answer its status."""
    query = (
        select(AlertDelivery)
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(Alert.cause_key == cause_key, AlertDelivery.channel == channel)
        .with_for_update(of=AlertDelivery)
    )
    delivery = session.execute(query).scalar_one_or_none()
    return "unknown" if delivery is None else ledger.give_up(delivery, error, now)


def _attempt(session: Session, delivery_id: int, number: int) -> AlertAttempt:
    query = select(AlertAttempt).where(
        AlertAttempt.delivery_id == delivery_id, AlertAttempt.number == number
    )
    return session.execute(query).scalar_one()


def _as_notifier_alert(alert: Alert) -> notifiers.Alert:
    return notifiers.Alert(
        alert_id=alert.id,
        cause_key=alert.cause_key,
        severity=alert.severity,
        title=alert.title,
        text=alert.text,
        conversation_id=alert.conversation_id,
        event_id=alert.event_id,
        facts=alert.facts or {},
        raised_at=alert.raised_at,
    )
