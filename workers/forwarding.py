"""Forwarding: every event to the user's destinations (of every type, hooks too), once per
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schemas import tracing
from schemas.messages import AlertMessage
from schemas.settings import Settings
from workers import ledger, pausing, rate
from workers.destinations import Destination, ForwardedEvent, configured, task_for
from workers.destinations.base import answer_of
from workers.errors import Permanent, Transient, is_transient
from workers.ledger import Busy
from workers.pausing import NO_GUARD, Guard
from workers.retry import DELIVERY_RETRY_BASE_SECONDS, cap_seconds, delay
from workers.store.db import Store
from workers.store.models import (
    DeliveryStatus,
    DestinationState,
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
# The type recorded for a destination this process does not have (its attempt fails).
UNKNOWN_TYPE = "unknown"
# A destination's ``gives_up(attempts, first_attempt_at, now)``.
GivesUp = Callable[[int, datetime, datetime], bool]
# A destination's ``wants(kind, event_type)``.
Wants = Callable[[str | None, str | None], bool]


def tasks_for(
    event_id: str, message: dict[str, Any], status: str, settings: Settings
) -> list[dict[str, Any]]:
    """The delivery tasks for an event just committed: ``{"name", "args"}`` each. None for an
    import of an event settled where it came from: that deployment handed it on already."""
    if status not in FORWARDED_STATUSES or message.get("settled"):
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
    # delivered, retrying, failed; or, when nothing was attempted: sending, unknown,
    # rate_limited, paused (the destination is), ordered (an earlier event goes first)
    status: str
    retry_in: float | None = None  # seconds until this task should run again
    alerts: tuple[AlertMessage, ...] = ()  # to raise: the destination paused, or resumed
    # Tasks to send now: an ordered destination's next event of the conversation, woken.
    wake: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt_id: int
    attempt: int  # in this round
    first_attempt_at: datetime
    event: ForwardedEvent


def deliver(
    store: Store,
    event_id: str,
    name: str,
    source: str,
    settings: Settings,
    carried: dict[str, Any] | None = None,
) -> Outcome:
    """Attempt the delivery of ``event_id`` to destination ``name`` unless done or in hand.

    ``carried``: an attempt made while the store was away (see ``_record``), recorded first, so
    that it is not made again once its lease runs out.
    """
    destination = configured(settings).get(name)
    if destination is not None and destination.rate and carried is None:
        held = rate.wait_seconds(settings, name, destination.rate)
        if held:  # FORWARD_<NAME>_RATE: wait for a slot, taking no attempt
            return Outcome(
                "rate_limited", min(held, cap_seconds(settings.visibility_timeout_seconds))
            )
    lease = timedelta(seconds=destination.lease_seconds() if destination else 60)
    gives_up = destination.gives_up if destination else _never
    guard = destination.guard if destination else NO_GUARD
    wants = destination.wants if destination else _wants_nothing
    alerts: list[AlertMessage] = []
    with store.session() as session:
        if carried is not None:
            alerts += _finish(session, carried["attempt"], _now())
        kind = destination.type if destination else UNKNOWN_TYPE
        claim = _claim(session, event_id, name, source, kind, lease, gives_up, _now(), guard, wants)
    if isinstance(claim, Busy):
        cap = cap_seconds(settings.visibility_timeout_seconds)
        retry_in = None if claim.retry_in is None else min(claim.retry_in, cap)
        return Outcome(claim.status, retry_in, tuple(alerts))
    started = time.monotonic()
    answer, error, retry_after, status = None, None, None, "delivered"
    try:
        if destination is None:
            raise Permanent(f"no destination {name!r} here (FORWARD_<NAME>_URL or TAVUS_HOOKS)")
        with tracing.span(
            f"deliver {destination.type} {name}",
            "internal" if destination.type == "hook" else "client",
            {
                "tavus.destination": name,
                "tavus.destination.type": destination.type,
                "tavus.event_id": event_id,
                "tavus.attempt": claim.attempt,
            },
        ):
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
            retry_in = delay(claim.attempt, cap, DELIVERY_RETRY_BASE_SECONDS, retry_after)
    attempt = {
        "delivery_id": claim.delivery_id,
        "attempt_id": claim.attempt_id,
        "outcome": status,
        "status_code": answer.status_code if answer else None,
        "answer": answer.excerpt if answer else None,
        "error": error,
        "latency_ms": round(latency_ms, 1),
        "destination": name,
        "guard": None if guard.pause_after is None else guard.as_json(),
        "released": status == "failed" and guard.order is not None,
    }
    alerts += _record(store, attempt, now, retry_in)
    log.log(
        logging.WARNING if error else logging.INFO,
        "forward %s to %s: attempt %d %s%s",
        event_id,
        name,
        claim.attempt,
        status,
        f" ({error})" if error else "",
    )
    wake = ()
    if guard.order is not None and status in DeliveryStatus.FINAL:
        wake = _next_in_order(store, name, event_id)
    return Outcome(status, retry_in, tuple(alerts), wake)


def _next_in_order(store: Store, name: str, event_id: str) -> tuple[dict[str, Any], ...]:
    """The task of the next event waiting behind ``event_id`` at ordered ``name``, if any. Its
    own task is waiting too: whichever comes first delivers it, the other finds it done."""
    try:
        with store.session() as session:
            found = pausing.next_waiting(session, name, event_id)
    except Exception as exc:  # a boundary: it wakes at its next look anyway
        log.warning("ordered %s: the next event not woken: %s", name, type(exc).__name__)
        return ()
    if found is None:
        return ()
    next_id, type_name, source = found
    return ({"name": task_for(type_name), "args": [next_id, name, source]},)


def register_destinations(store: Store, settings: Settings) -> None:
    """At worker start: the guarded destinations' states exist from now on (``pausing``)."""
    names = {
        name: dest.type
        for name, dest in configured(settings).items()
        if dest.guard.pause_after is not None
    }
    with store.session() as session:
        pausing.register(session, names, _now())


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
        ledger.give_up(delivery, reason, _now())
    log.error("forward %s to %s dead-lettered: %s", event_id, name, reason)
    return Outcome(DeliveryStatus.FAILED)


def _claim(
    session: Session,
    event_id: str,
    name: str,
    source: str,
    kind: str,
    lease: timedelta,
    gives_up: GivesUp,
    now: datetime,
    guard: Guard = NO_GUARD,
    wants: Wants | None = None,
) -> Claim | Busy:
    event = session.get(Event, event_id)
    if event is None:
        return Busy("unknown")
    defaults = {"source": source, "type": kind, "status": DeliveryStatus.PENDING, "attempts": 0}
    delivery = locked_record(
        session, ForwardDelivery, defaults, event_id=event_id, destination=name
    )
    if kind != UNKNOWN_TYPE:
        delivery.type = kind  # FORWARD_<NAME>_URL may have changed scheme since
    if busy := ledger.held(delivery, now):
        return busy
    if guard.pause_after is not None or guard.order is not None:
        wait = pausing.gate(session, name, kind, guard, event, wants or _wants_nothing, now)
        if wait is not None:  # paused, or an earlier event of its conversation goes first
            return Busy(wait.status, wait.retry_in)
    if ledger.was_lost(delivery):
        lost = session.get(ForwardAttempt, delivery.current_attempt_id)
        if lost is not None:  # its worker died mid-attempt, or a hard time limit stopped it
            lost.outcome, lost.error = "lost", "the worker stopped before recording an answer"
        if gives_up(delivery.attempts, delivery.first_attempt_at or now, now):
            error = f"the worker stopped during attempt {delivery.attempts}, the last one"
            DeliveryStatus.settle(delivery, DeliveryStatus.FAILED, error, now)
            return Busy(DeliveryStatus.FAILED)
    attempt = ForwardAttempt(delivery_id=delivery.id, started_at=now, outcome="sending")
    session.add(attempt)
    session.flush()
    ledger.begin(delivery, lease, now)
    delivery.first_attempt_at = delivery.first_attempt_at or now
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


def _never(_attempts: int, _first_attempt_at: datetime, _now: datetime) -> bool:
    return False


def _wants_nothing(_kind: str | None, _event_type: str | None) -> bool:
    return False


def _record(
    store: Store, attempt: dict[str, Any], now: datetime, retry_in: float | None
) -> list[AlertMessage]:
    """Record an attempt that was made (the alerts it raises). The store failing now must not
    turn it into a lost attempt (made again after its lease: a hook run twice): the retry
    carries it, to record it."""
    try:
        with store.session() as session:
            return _finish(session, attempt, now)
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise Transient(
            f"the store could not record an attempt: {type(exc).__name__}",
            retry_after=retry_in,
            carry={"attempt": attempt},
        ) from exc


def _finish(session: Session, made: dict[str, Any], now: datetime) -> list[AlertMessage]:
    """Record attempt ``made`` (``_record``'s keys), once: a carried record may find it done.
    The destination's state counts it too (``workers.pausing``): the alerts that raises."""
    attempt = session.get(ForwardAttempt, made["attempt_id"])
    if attempt is None or attempt.finished_at is not None:
        return []
    attempt.finished_at = now
    attempt.outcome = made["outcome"]
    attempt.latency_ms = made["latency_ms"]
    attempt.status_code = made["status_code"]
    attempt.answer = made["answer"]
    attempt.error = made["error"]
    delivery = session.get(ForwardDelivery, made["delivery_id"], with_for_update=True)
    if delivery.current_attempt_id != made["attempt_id"]:
        return []  # our lease ran out and another worker took over: its result stands
    error = made["error"]
    if made.get("released"):  # FORWARD_<NAME>_ORDER: the next event may go now
        error = f"{error}{pausing.RELEASED}"
    DeliveryStatus.settle(delivery, made["outcome"], error, now)
    if not made.get("guard"):
        return []
    return pausing.after_attempt(
        session,
        made["destination"],
        made["guard"],
        made["outcome"],
        made["status_code"],
        made["error"],
        now,
    )


def _now() -> datetime:
    return datetime.now(UTC)


# --- what `tavus-callbacks deliveries` and `redeliver` do ----------------------------------


def redeliver(
    session: Session,
    settings: Settings,
    event_id: str | None = None,
    destination: str | None = None,
    failed: bool = False,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Reset deliveries for another round; the tasks to send, inside this transaction (a task
    waits for the row lock, so it sees the reset). An event's configured destinations that never
    had a delivery (added since) get one."""
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
        task = task_for(delivery.type)
        tasks.append({"name": task, "args": [delivery.event_id, name, delivery.source]})
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
    for name, dest in wanted.items():
        defaults = {
            "source": event.source,
            "type": dest.type,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
        }
        added.append(
            locked_record(session, ForwardDelivery, defaults, event_id=event_id, destination=name)
        )
    return added


# --- what `tavus-callbacks destinations` (and the console, the API) show and do ---------------


class NoSuchDestination(LookupError):
    """A name that is neither configured (FORWARD_<NAME>_URL) nor known to the store."""


def destinations_table(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Each destination of ``FORWARD_<NAME>_URL`` (and any the store still knows): its type,
    state, last success, failures in a row and pending deliveries. Hooks are not paused, and
    not listed: `deliveries --destination hook:...` shows theirs."""
    guarded = {
        name: dest
        for name, dest in configured(settings).items()
        if dest.guard.pause_after is not None
    }
    states = {state.name: state for state in session.scalars(select(DestinationState))}
    waiting = (
        select(ForwardDelivery.destination, func.count())
        .where(ForwardDelivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.SENDING)))
        .group_by(ForwardDelivery.destination)
    )
    pending = {name: count for name, count in session.execute(waiting)}
    table = []
    for name in sorted(set(guarded) | set(states)):
        dest, state = guarded.get(name), states.get(name)
        table.append(
            {
                "name": name,
                "type": dest.type if dest else (state.type if state else None),
                "configured": dest is not None,
                "state": "paused" if state is not None and state.paused_at else "active",
                "paused_at": _iso(state.paused_at if state else None),
                "paused_by": state.paused_by if state else None,
                "pause_reason": state.pause_reason if state else None,
                "next_probe_at": _iso(state.next_probe_at if state else None),
                "last_success_at": _iso(state.last_success_at if state else None),
                "last_failure_at": _iso(state.last_failure_at if state else None),
                "consecutive_failures": state.consecutive_failures if state else 0,
                "pending": pending.get(name, 0),
                "order": dest.guard.order if dest else None,
                "pause_after": dest.guard.pause_after if dest else None,
                "probe_seconds": dest.guard.probe_seconds if dest else None,
            }
        )
    return table


def pause_destination(session: Session, settings: Settings, name: str, actor: str) -> bool:
    """A person pauses ``name`` until resumed by hand; False if it was paused already."""
    name = name.lower()
    dest = configured(settings).get(name)
    if dest is None and session.get(DestinationState, name) is None:
        raise NoSuchDestination(name)
    if dest is not None and dest.guard.pause_after is None:
        raise NoSuchDestination(name)  # a hook: not paused
    return pausing.pause(session, name, actor, dest.type if dest else None, _now())


def resume_destination(
    session: Session, settings: Settings, name: str
) -> tuple[bool, AlertMessage | None]:
    """Resume ``name`` at once: whether it was paused, and the resumed alert to raise when its
    failures had paused it."""
    name = name.lower()
    if configured(settings).get(name) is None and session.get(DestinationState, name) is None:
        raise NoSuchDestination(name)
    done = pausing.resume(session, name, _now())
    if done is False:
        return False, None
    return True, None if done is True else done


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
