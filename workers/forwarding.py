"""Forwarding: every event to the user's destinations (signed webhooks, Python hooks), once per
(event, destination), every attempt recorded. Knows nothing of Celery: the tasks in
``workers.tasks.forward`` wrap ``deliver`` and schedule the retries it asks for.

After an event is committed, ``tasks_for`` names one task per destination that wants it; a
repeat of the event (a Celery redelivery, a replay, Tavus's resend) names them again, and each
finds its delivery done and sends nothing. A delivery is claimed before it is attempted, for a
lease: a second task for the same (event, destination) waits instead of sending a copy, and a
worker killed mid-attempt loses its hold when the lease runs out (the one case where the
destination may get the event twice, with the same ``webhook-id``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.settings import Settings
from schemas.times import iso
from workers.destinations import Destination, ForwardedEvent, configured, task_for
from workers.destinations.base import Answer, answer_of
from workers.retry import RETRY_BASE_SECONDS, Permanent, Transient, cap_seconds, delay
from workers.store.db import Store
from workers.store.models import (
    DeliveryStatus,
    Event,
    EventStatus,
    ForwardAttempt,
    ForwardDelivery,
)
from workers.store.records import locked_record

log = logging.getLogger(__name__)

# Quarantined bodies are not Tavus's: they are never forwarded. Every other settled event is,
# whether our own handler succeeded, had nothing to do, or gave up.
FORWARDED_STATUSES = frozenset({EventStatus.PROCESSED, EventStatus.UNHANDLED, EventStatus.FAILED})


def tasks_for(
    event_id: str, message: dict[str, Any], status: str, settings: Settings
) -> list[dict[str, Any]]:
    """The delivery tasks for an event just committed: ``{"name", "args"}`` each."""
    if status not in FORWARDED_STATUSES:
        return []
    kind, event_type = message["kind"], message["event_type"]
    source = message.get("source", "callback")
    return [
        {"name": dest.task, "args": [event_id, name, source]}
        for name, dest in configured(settings).items()
        if dest.wants(kind, event_type)
    ]


@dataclass(frozen=True)
class Outcome:
    status: str  # delivered, retrying, failed; or, when nothing was attempted: sending, unknown
    retry_in: float | None = None  # seconds until this task should run again


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt_id: int
    attempt: int  # in this round
    first_attempt_at: datetime
    event: ForwardedEvent


@dataclass(frozen=True)
class Busy:
    status: str
    retry_in: float | None = None


def deliver(store: Store, event_id: str, name: str, source: str, settings: Settings) -> Outcome:
    """Attempt the delivery of ``event_id`` to destination ``name`` unless done or in hand."""
    destination = configured(settings).get(name)
    lease = timedelta(seconds=destination.lease_seconds() if destination else 60)
    with store.session() as session:
        claim = _claim(session, event_id, name, source, lease, _now())
    if isinstance(claim, Busy):
        cap = cap_seconds(settings.visibility_timeout_seconds)
        return Outcome(claim.status, None if claim.retry_in is None else min(claim.retry_in, cap))
    started = time.monotonic()
    answer, error, retry_after, status = None, None, None, "delivered"
    try:
        if destination is None:
            raise Permanent(f"no destination {name!r} here (FORWARD_<NAME>_URL or TAVUS_HOOKS)")
        answer = destination.deliver(claim.event)
    except Permanent as exc:
        status, error, answer = "failed", str(exc), answer_of(exc)
    except Transient as exc:
        status, error, answer = "retrying", str(exc), answer_of(exc)
        retry_after = exc.retry_after
    except Exception as exc:  # a boundary: a destination's own bug is recorded, and retried
        status, error = "retrying", f"unexpected {type(exc).__name__}"
    latency_ms = (time.monotonic() - started) * 1000
    now = _now()
    retry_in = None
    if status == "retrying":
        if destination.gives_up(claim.attempt, claim.first_attempt_at, now):
            status, error = "failed", f"{error} (gave up after {claim.attempt} attempts)"
        else:
            cap = cap_seconds(settings.visibility_timeout_seconds)
            retry_in = delay(claim.attempt, cap, RETRY_BASE_SECONDS, retry_after)
    with store.session() as session:
        _finish(session, claim, status, answer, error, latency_ms, now)
    log.log(
        logging.WARNING if error else logging.INFO,
        "forward %s to %s: attempt %d %s%s",
        event_id,
        name,
        claim.attempt,
        status,
        f" ({error})" if error else "",
    )
    return Outcome(status, retry_in)


def give_up(store: Store, event_id: str, name: str, error: BaseException) -> Outcome:
    """The delivery task kept failing outside the destination (a bug, a bad row): mark the
    delivery ``failed``, so that ``deliveries --failed`` lists it and ``redeliver`` can retry."""
    reason = f"delivery task failed: {type(error).__name__}"  # no message: it may quote a URL
    with store.session() as session:
        delivery = session.scalar(
            select(ForwardDelivery)
            .where(ForwardDelivery.event_id == event_id, ForwardDelivery.destination == name)
            .with_for_update()
        )
        if delivery is None or delivery.status in DeliveryStatus.FINAL:
            return Outcome(delivery.status if delivery else "unknown")
        DeliveryStatus.settle(delivery, DeliveryStatus.FAILED, reason, _now())
    log.error("forward %s to %s dead-lettered: %s", event_id, name, reason)
    return Outcome(DeliveryStatus.FAILED)


def _claim(
    session: Session, event_id: str, name: str, source: str, lease: timedelta, now: datetime
) -> Claim | Busy:
    event = session.get(Event, event_id)
    if event is None:
        return Busy("unknown")
    defaults = {"source": source, "status": DeliveryStatus.PENDING, "attempts": 0}
    delivery = locked_record(
        session, ForwardDelivery, defaults, event_id=event_id, destination=name
    )
    if delivery.status in DeliveryStatus.FINAL:
        return Busy(delivery.status)
    if delivery.status == DeliveryStatus.SENDING:
        if delivery.claimed_until and delivery.claimed_until > now:
            return Busy(DeliveryStatus.SENDING, (delivery.claimed_until - now).total_seconds() + 1)
        lost = session.get(ForwardAttempt, delivery.current_attempt_id)
        if lost is not None:  # its worker died mid-attempt
            lost.outcome, lost.error = "lost", "the worker stopped before recording an answer"
    attempt = ForwardAttempt(delivery_id=delivery.id, started_at=now, outcome="sending")
    session.add(attempt)
    session.flush()
    delivery.attempts += 1
    delivery.first_attempt_at = delivery.first_attempt_at or now
    delivery.status = DeliveryStatus.SENDING
    delivery.claimed_until = now + lease
    delivery.current_attempt_id = attempt.id
    forwarded = ForwardedEvent(
        id=event.id,
        kind=event.kind,
        event_type=event.event_type,
        conversation_id=event.conversation_id,
        source=delivery.source,
        received_at=event.received_at,
        raw=event.body,
    )
    return Claim(delivery.id, attempt.id, delivery.attempts, delivery.first_attempt_at, forwarded)


def _finish(
    session: Session,
    claim: Claim,
    outcome: str,
    answer: Answer | None,
    error: str | None,
    latency_ms: float,
    now: datetime,
) -> None:
    attempt = session.get(ForwardAttempt, claim.attempt_id)
    attempt.finished_at = now
    attempt.outcome = outcome
    attempt.latency_ms = round(latency_ms, 1)
    attempt.status_code = answer.status_code if answer else None
    attempt.answer = answer.excerpt if answer else None
    attempt.error = error
    delivery = session.get(ForwardDelivery, claim.delivery_id, with_for_update=True)
    if delivery.current_attempt_id != claim.attempt_id:
        return  # our lease ran out and another worker took over: its result stands
    DeliveryStatus.settle(delivery, outcome, error, now)


def _now() -> datetime:
    return datetime.now(UTC)


# --- what `tavus-callbacks deliveries` and `redeliver` do ----------------------------------


def list_deliveries(
    session: Session,
    destination: str | None = None,
    failed: bool = False,
    event_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries newest first, each with its event's type and every attempt."""
    query = (
        select(ForwardDelivery, Event.kind, Event.event_type, Event.conversation_id)
        .join(Event, Event.id == ForwardDelivery.event_id)
        .order_by(ForwardDelivery.id.desc())
        .limit(limit)
    )
    if destination is not None:
        query = query.where(ForwardDelivery.destination == destination.lower())
    if failed:
        query = query.where(ForwardDelivery.status == DeliveryStatus.FAILED)
    if event_id is not None:
        query = query.where(ForwardDelivery.event_id == event_id)
    rows = session.execute(query).all()
    history = _attempts(session, [row[0].id for row in rows])
    return [
        {
            "event_id": d.event_id,
            "destination": d.destination,
            "kind": kind,
            "event_type": event_type,
            "conversation_id": conversation_id,
            "source": d.source,
            "status": d.status,
            "attempts": len(history.get(d.id, [])),
            "delivered_at": iso(d.delivered_at),
            "last_error": d.last_error,
            "history": history.get(d.id, []),
        }
        for d, kind, event_type, conversation_id in rows
    ]


def _attempts(session: Session, delivery_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    if not delivery_ids:
        return found
    query = (
        select(ForwardAttempt)
        .where(ForwardAttempt.delivery_id.in_(delivery_ids))
        .order_by(ForwardAttempt.id)
    )
    for attempt in session.scalars(query):
        found.setdefault(attempt.delivery_id, []).append(
            {
                "started_at": iso(attempt.started_at),
                "finished_at": iso(attempt.finished_at),
                "outcome": attempt.outcome,
                "status_code": attempt.status_code,
                "latency_ms": attempt.latency_ms,
                "answer": attempt.answer,
                "error": attempt.error,
            }
        )
    return found


def redeliver(
    session: Session,
    settings: Settings,
    event_id: str | None = None,
    destination: str | None = None,
    failed: bool = False,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Reset deliveries for another round; the tasks to send, inside this transaction (a task
    waits for the row lock, so it sees the reset). An event's configured webhook destinations
    that never had a delivery (added since) get one."""
    query = select(ForwardDelivery).with_for_update().order_by(ForwardDelivery.id).limit(limit)
    if failed:
        query = query.where(ForwardDelivery.status == DeliveryStatus.FAILED)
    if event_id is not None:
        query = query.where(ForwardDelivery.event_id == event_id)
    if destination is not None:
        query = query.where(ForwardDelivery.destination == destination.lower())
    rows = list(session.scalars(query))
    if event_id is not None:
        rows += _new_deliveries(
            session, settings, event_id, destination, {r.destination for r in rows}
        )
    tasks = []
    for delivery in rows:
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts = 0
        delivery.first_attempt_at = None
        delivery.claimed_until = None
        delivery.delivered_at = None
        name = delivery.destination
        tasks.append({"name": task_for(name), "args": [delivery.event_id, name, delivery.source]})
    return tasks


def _new_deliveries(
    session: Session, settings: Settings, event_id: str, only: str | None, have: set[str]
) -> list[ForwardDelivery]:
    event = session.get(Event, event_id)
    if event is None or event.status == EventStatus.QUARANTINED:
        return []
    wanted: dict[str, Destination] = {
        name: dest
        for name, dest in configured(settings).items()
        if name not in have
        and (only is None or name == only.lower())
        and (only is not None or dest.wants(event.kind, event.event_type))
    }
    added = []
    for name in wanted:
        defaults = {"source": event.source, "status": DeliveryStatus.PENDING, "attempts": 0}
        added.append(
            locked_record(session, ForwardDelivery, defaults, event_id=event_id, destination=name)
        )
    return added
