"""Each destination guarded: paused when broken, probed while paused, and in order when asked.

A destination's state (``DestinationState``) lives in the store, so every worker on every host
sees the same pause, and a restart forgets nothing.

- **Paused when broken.** ``FORWARD_<NAME>_PAUSE_AFTER`` failed attempts in a row (default 20),
  or one 410 Gone, pause it. Its deliveries then wait: a claim finds the pause and takes no
  attempt (the delivery stays ``pending``). Every ``FORWARD_<NAME>_PROBE_SECONDS`` one claim is
  let through as the probe; the first success (the probe's, or an attempt already in flight)
  resumes it, and the waiting deliveries go at their next look. An alert is raised when it
  pauses (``destination_paused:<name>``, then ``:<n>`` for its n-th pause) and when it resumes
  (``destination_resumed:<name>``, likewise). A person may pause one (``destinations pause NAME``):
  no probe goes then, and only ``destinations resume NAME`` resumes it.
- **In order when asked.** With ``FORWARD_<NAME>_ORDER=conversation`` a delivery waits while an
  earlier event of its conversation (Tavus's ``timestamp``, then arrival) is still to be
  delivered there: stored and not processed yet, or its delivery not final. One that failed for
  good lets the next go (its error says so). Events stored before the destination was first
  seen (a worker with it started) and never meant for it hold nothing back.

Python hooks are not paused (they run in the worker: a failing hook is the code's own bug).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from schemas.messages import AlertMessage
from workers.store.models import (
    DeliveryStatus,
    DestinationState,
    Event,
    EventStatus,
    ForwardDelivery,
)
from workers.store.records import locked_record

log = logging.getLogger(__name__)

BY_FAILURES = "failures"  # ``paused_by`` of a pause that the failures made (else: who)
GONE = 410  # "this endpoint is gone": pause at once
# How soon a delivery held by an earlier one of its conversation looks again (and jitter).
ORDER_WAIT_SECONDS = 1.0
# How far the last success may lag: a busy destination does not write its row every delivery.
SUCCESS_RESOLUTION = timedelta(seconds=1)
RELEASED = "; ordered: the next event of its conversation went on without it"


@dataclass(frozen=True)
class Guard:
    """What a destination asked of its guard (``FORWARD_<NAME>_PAUSE_AFTER`` and the rest)."""

    pause_after: int | None  # None: never paused by failures (a hook)
    probe_seconds: float = 60.0
    order: str | None = None  # "conversation"

    def as_json(self) -> dict[str, Any]:
        """Carried with an attempt's record (``workers.forwarding``): plain JSON."""
        return {"pause_after": self.pause_after, "probe_seconds": self.probe_seconds}


NO_GUARD = Guard(None)


@dataclass(frozen=True)
class Wait:
    """Not now, and no attempt taken: ``status`` says why (paused, ordered)."""

    status: str
    retry_in: float


def state_of(session: Session, name: str, type_name: str, now: datetime) -> DestinationState:
    """The destination's state, made the first time it is seen (not locked when it exists)."""
    found = session.get(DestinationState, name)
    if found is not None:
        return found
    defaults = {"type": type_name, "created_at": now, "consecutive_failures": 0, "pauses": 0}
    return locked_record(session, DestinationState, defaults, name=name)


def register(session: Session, names: dict[str, str], now: datetime) -> None:
    """At worker start: each guarded destination (name: type) has its state from now on, so that
    the events stored since are the ones an ordered destination waits for."""
    for name, type_name in names.items():
        state_of(session, name, type_name, now)


def gate(
    session: Session,
    name: str,
    type_name: str,
    guard: Guard,
    event: Event,
    wants: Any,
    now: datetime,
) -> Wait | None:
    """May a delivery of ``event`` to ``name`` be attempted now? None: yes (it may be the
    probe of a paused destination); else how long it waits. ``wants(kind, event_type)``: the
    destination's filter, for the earlier events of an ordered one."""
    state = state_of(session, name, type_name, now)
    if state.paused_at is not None:
        held = _paused(session, state, guard, now)
        if held is not None:
            return held
    ordered = guard.order == "conversation" and event.conversation_id
    if ordered and _earlier_pending(session, name, state.created_at, event, wants):
        return Wait("ordered", ORDER_WAIT_SECONDS + random.uniform(0, ORDER_WAIT_SECONDS / 2))
    return None


def _paused(session: Session, state: DestinationState, guard: Guard, now: datetime) -> Wait | None:
    """None when this claim is the probe (the next probe is then set), else a Wait."""
    probe = guard.probe_seconds
    if state.paused_by != BY_FAILURES:  # a person paused it: no probe
        return Wait("paused", probe + random.uniform(0, probe / 4))
    if state.next_probe_at is not None and state.next_probe_at > now:
        until = (state.next_probe_at - now).total_seconds()
        return Wait("paused", until + random.uniform(0, min(probe, until) / 4 + 0.05))
    # The probe is due: take it, locking the row so that one claim only does.
    session.refresh(state, with_for_update=True)
    if state.paused_at is None:
        return None  # resumed meanwhile
    if state.next_probe_at is not None and state.next_probe_at > now:
        return Wait("paused", (state.next_probe_at - now).total_seconds())
    state.next_probe_at = now + timedelta(seconds=probe)
    log.info("destination %s paused: probing with one delivery", state.name)
    return None


def _in_order() -> Any:
    """Tavus's order, as an SQL expression: its ``timestamp``, else its arrival."""
    return func.coalesce(Event.occurred_at, Event.received_at, type_=Event.received_at.type)


def next_waiting(session: Session, name: str, event_id: str) -> tuple[str, str, str] | None:
    """After ``event_id``'s delivery to ordered ``name`` settled: the next event of its
    conversation still waiting there (its id, its delivery's type and source), to wake now
    rather than at its next look."""
    event = session.get(Event, event_id)
    if event is None or not event.conversation_id:
        return None
    query = (
        select(ForwardDelivery.event_id, ForwardDelivery.type, ForwardDelivery.source)
        .join(Event, Event.id == ForwardDelivery.event_id)
        .where(
            Event.conversation_id == event.conversation_id,
            ForwardDelivery.destination == name,
            ForwardDelivery.status == DeliveryStatus.PENDING,
            ForwardDelivery.event_id != event_id,
        )
        .order_by(_in_order(), Event.received_at, Event.id)
        .limit(1)
    )
    found = session.execute(query).first()
    return None if found is None else (found[0], found[1], found[2])


def _earlier_pending(
    session: Session, name: str, since: datetime, event: Event, wants: Any
) -> bool:
    """Is an earlier event of ``event``'s conversation still to be delivered to ``name``?"""
    when = _in_order()
    mine = event.occurred_at or event.received_at
    earlier = or_(
        when < mine,
        and_(when == mine, Event.received_at < event.received_at),
        and_(when == mine, Event.received_at == event.received_at, Event.id < event.id),
    )
    query = (
        select(Event.kind, Event.event_type, Event.status, ForwardDelivery.status)
        .outerjoin(
            ForwardDelivery,
            and_(ForwardDelivery.event_id == Event.id, ForwardDelivery.destination == name),
        )
        .where(
            Event.conversation_id == event.conversation_id,
            Event.id != event.id,
            Event.status != EventStatus.QUARANTINED,
            or_(
                and_(ForwardDelivery.status.is_(None), Event.received_at >= since),
                ForwardDelivery.status.not_in(DeliveryStatus.FINAL),
            ),
            earlier,
        )
    )
    for kind, event_type, event_status, delivery_status in session.execute(query):
        if delivery_status is not None:
            return True  # its delivery is pending or being sent
        if event_status == EventStatus.RECEIVED or wants(kind, event_type):
            return True  # not processed yet (it may be wanted), or its task is on its way
    return False


def after_attempt(
    session: Session,
    name: str,
    guard: dict[str, Any],
    outcome: str,
    status_code: int | None,
    error: str | None,
    now: datetime,
) -> list[AlertMessage]:
    """Count the attempt in the destination's state; the alerts to raise (paused, resumed)."""
    pause_after = guard.get("pause_after")
    if pause_after is None:
        return []
    if outcome == "delivered":
        return _succeeded(session, name, now)
    state = session.get(DestinationState, name, with_for_update=True, populate_existing=True)
    if state is None:
        return []
    state.consecutive_failures += 1
    state.last_failure_at = now
    if state.paused_at is not None:
        return []  # a probe (or an attempt in flight) failed: still paused
    gone = status_code == GONE
    if not gone and state.consecutive_failures < pause_after:
        return []
    why = (
        f"HTTP 410 Gone: {error}"
        if gone
        else f"{state.consecutive_failures} failed attempts in a row; the last: {error}"
    )
    _pause(state, BY_FAILURES, why, now)
    state.next_probe_at = now + timedelta(seconds=float(guard.get("probe_seconds") or 60.0))
    log.warning("destination %s paused: %s", name, why)
    return [paused_alert(state, float(guard.get("probe_seconds") or 60.0))]


def _succeeded(session: Session, name: str, now: datetime) -> list[AlertMessage]:
    state = session.get(DestinationState, name)
    if state is None:
        return []
    stale = state.last_success_at is None or now - state.last_success_at >= SUCCESS_RESOLUTION
    if state.consecutive_failures == 0 and state.paused_at is None and not stale:
        return []  # a healthy, busy destination: no write for every delivery
    session.refresh(state, with_for_update=True)
    state.consecutive_failures = 0
    state.last_success_at = now
    if state.paused_at is None or state.paused_by != BY_FAILURES:
        return []
    log.warning("destination %s resumed: an attempt succeeded", name)
    return [_resume(state, "an attempt succeeded", now)]


def _pause(state: DestinationState, by: str, why: str, now: datetime) -> None:
    state.paused_at = now
    state.paused_by = by
    state.pause_reason = why[:2000]
    state.pauses += 1


def _resume(state: DestinationState, how: str, now: datetime) -> AlertMessage:
    paused_for = round((now - state.paused_at).total_seconds()) if state.paused_at else 0
    alert = _alert(
        state,
        "resumed",
        "info",
        f"Destination {state.name} is delivering again ({how}), after {paused_for} s paused. "
        "The deliveries that waited go now, each once.",
        paused_seconds=paused_for,
    )
    state.paused_at = None
    state.paused_by = None
    state.pause_reason = None
    state.next_probe_at = None
    state.consecutive_failures = 0
    return alert


def paused_alert(state: DestinationState, probe_seconds: float) -> AlertMessage:
    return _alert(
        state,
        "paused",
        "warning",
        f"Destination {state.name} is paused: {state.pause_reason}\n"
        f"Its deliveries wait (not attempted, not failed). One is tried every "
        f"{probe_seconds:g} s; the first success resumes it. `tavus-callbacks destinations` "
        f"shows it; `destinations resume {state.name}` resumes it at once.",
        reason=state.pause_reason,
    )


def _alert(
    state: DestinationState, what: str, severity: str, text: str, **facts: Any
) -> AlertMessage:
    """``destination_<what>:<name>`` for its first pause, ``destination_<what>:<name>:<n>`` for
    its n-th: an alert is raised once per cause key, and each pause is news."""
    cause_key = f"destination_{what}:{state.name}"
    if state.pauses > 1:
        cause_key += f":{state.pauses}"
    return AlertMessage(
        cause_key=cause_key[:512],
        severity=severity,
        title=f"Destination {state.name} {what}",
        text=text,
        conversation_id=None,
        event_id=None,
        facts={"destination": state.name, "pauses": state.pauses, **facts},
    )


def pause(session: Session, name: str, actor: str, type_name: str | None, now: datetime) -> bool:
    """A person pauses ``name``; False if it was paused already."""
    state = state_of(session, name, type_name or "unknown", now)
    session.refresh(state, with_for_update=True)
    if state.paused_at is not None:
        return False
    _pause(state, actor, f"paused by {actor}", now)
    state.next_probe_at = None
    return True


def resume(session: Session, name: str, now: datetime) -> AlertMessage | bool:
    """A person resumes ``name``: False if it was not paused; the resumed alert when the
    failures had paused it (its paused alert was raised), else True."""
    state = session.get(DestinationState, name, with_for_update=True, populate_existing=True)
    if state is None or state.paused_at is None:
        return False
    by_failures = state.paused_by == BY_FAILURES
    alert = _resume(state, "resumed by hand", now)
    return alert if by_failures else True
