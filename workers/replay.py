"""Replay: send stored events through their handler again, after the cause of a failure is fixed.

An event is reset (status ``received``, attempts 0) and its PROCESS_EVENT message, marked
``replay``, is published inside the same transaction: a worker that takes the message waits for
the row lock, so it always sees the reset, and a publish that fails leaves the event as it was.
Replaying twice is harmless: the second message finds the event final and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.messages import EventMessage
from workers.store.models import Event, EventStatus

Publish = Callable[[EventMessage], None]


@dataclass(frozen=True)
class Replayed:
    event_id: str
    event_type: str | None
    conversation_id: str | None
    was: str  # the status before the replay
    attempts: int
    last_error: str | None


def failed_events(session: Session, limit: int) -> list[Event]:
    """Dead-lettered events, oldest first, locked until the transaction ends."""
    query = (
        select(Event)
        .where(Event.status == EventStatus.FAILED)
        .order_by(Event.received_at)
        .limit(limit)
        .with_for_update()
    )
    return list(session.scalars(query))


def one_event(session: Session, event_id: str) -> Event | None:
    return session.get(Event, event_id, with_for_update=True)


def replay(events: list[Event], publish: Publish) -> list[Replayed]:
    """Reset each event and publish its message; call inside the session's transaction."""
    done = []
    for event in events:
        done.append(
            Replayed(
                event.id,
                event.event_type,
                event.conversation_id,
                event.status,
                event.attempts,
                event.last_error,
            )
        )
        event.status = EventStatus.RECEIVED
        event.attempts = 0
        event.processed_at = None
        event.errors = None  # validated again, with today's schemas
        event.warnings = None
        event.failed_stage = None
        publish(message_for(event))
    return done


def message_for(event: Event) -> EventMessage:
    return {
        "event_id": event.id,
        "event_key": event.event_key,
        "kind": event.kind,
        "event_type": event.event_type,
        "conversation_id": event.conversation_id,
        "received_at": event.received_at.timestamp(),
        "body": event.body,
        "errors": None,
        "source": "replay",
    }
