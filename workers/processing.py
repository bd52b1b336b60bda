"""Processing one event: store it once, run its handler once, record how it went.

Celery delivers at least once (``acks_late``), so every step here is idempotent: the event row
is unique on its key, a row already final is left alone, and handlers merge rather than append.
This module knows nothing of Celery; the task in ``workers.tasks.events`` wraps it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from marshmallow import ValidationError
from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, make_transient_to_detached

from schemas.callbacks import SCHEMAS_BY_KIND
from schemas.messages import EventMessage
from workers.handlers import HandlerContext, handler_for
from workers.store.db import Store
from workers.store.models import Event, EventStatus

log = logging.getLogger(__name__)

SendTask = Callable[[str, list[Any]], None]


@dataclass(frozen=True)
class Outcome:
    event_id: str
    status: str
    retry_in: float | None = None  # seconds until the next attempt; None: done


class HandlerFailed(Exception):
    """The handler raised: its transaction is rolled back, then the attempt is recorded."""

    def __init__(self, cause: Exception, occurred_at: datetime | None) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.occurred_at = occurred_at


def process(store: Store, message: EventMessage, send: SendTask, max_attempts: int) -> Outcome:
    try:
        with store.session() as session:
            event = store_event(session, message)
            if event.status not in EventStatus.FINAL:
                _run_handler(session, event)
            outcome = Outcome(event.id, event.status, _retry_delay(event))
            pending = list(event.pending_tasks or [])
    except HandlerFailed as failure:
        # One transaction per event and no savepoint on the way (it costs every event two more
        # statements): a failure, the rare case, pays for a second transaction instead.
        with store.session() as session:
            event = store_event(session, message)
            _record_failure(event, failure, max_attempts)
            return Outcome(event.id, event.status, _retry_delay(event))
    if pending:
        _send_pending(store, event.id, pending, send)
    return outcome


def store_event(session: Session, message: EventMessage) -> Event:
    """Insert the event unless its key is stored; return the stored row, locked."""
    row = {
        "id": message["event_id"],
        "event_key": message["event_key"],
        "kind": message["kind"],
        "event_type": message["event_type"],
        "conversation_id": message["conversation_id"],
        "source": message.get("source", "callback"),
        "received_at": datetime.fromtimestamp(message["received_at"], UTC),
        "body": message["body"],
        "errors": message["errors"],
        "status": EventStatus.QUARANTINED if message["errors"] else EventStatus.RECEIVED,
        "attempts": 0,
    }
    if session.execute(_INSERT_EVENT[session.bind.dialect.name], row).first() is not None:
        # New, the usual case: the INSERT holds the row's lock, and we know every column, so
        # the row is attached as it is rather than read back.
        event = Event(**row, **_UNSET_ON_INSERT)
        make_transient_to_detached(event)
        session.add(event)
        return event
    return session.execute(_LOCK_EVENT, {"event_key": message["event_key"]}).scalar_one()


# Built once: building a statement per event costs more than running it.
_INSERT_EVENT = {
    dialect.dialect.name: dialect.insert(Event.__table__)
    .on_conflict_do_nothing()
    .returning(Event.__table__.c.id)
    for dialect in (postgresql, sqlite)
}
_LOCK_EVENT = (
    select(Event)
    .where(Event.event_key == bindparam("event_key"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_UNSET_ON_INSERT = {"occurred_at": None, "last_error": None, "processed_at": None}
_UNSET_ON_INSERT["pending_tasks"] = None


def _run_handler(session: Session, event: Event) -> None:
    raw = orjson.loads(event.body)
    try:
        data = SCHEMAS_BY_KIND[event.kind].load(raw)
    except ValidationError as exc:
        # The receiver and this worker disagree (a deploy in between): keep it, quarantined.
        _finish(event, EventStatus.QUARANTINED, errors=exc.messages)
        return
    event.occurred_at = data.get("timestamp") or data.get("updated_at")
    handler = handler_for(event.kind, event.event_type)
    if handler is None:
        _finish(event, EventStatus.UNHANDLED)
        return
    context = HandlerContext(session=session, event=event, raw=raw, data=data)
    event.attempts += 1
    occurred_at = event.occurred_at  # read now: a failed flush expires every loaded row
    try:
        handler(context)
        event.pending_tasks = context.follow_ups or None
        _finish(event, EventStatus.PROCESSED)
        session.flush()  # the handler's writes, so that they too fail inside this boundary
    except Exception as exc:  # a boundary: the caller rolls back, records, retries or gives up
        raise HandlerFailed(exc, occurred_at) from exc


def _record_failure(event: Event, failure: HandlerFailed, max_attempts: int) -> None:
    event.occurred_at = failure.occurred_at
    event.attempts += 1
    log.warning("event %s attempt %d failed: %s", event.id, event.attempts, failure)
    event.last_error = str(failure)[:2000]
    if event.attempts >= max_attempts:
        _finish(event, EventStatus.FAILED)


def _finish(event: Event, status: str, errors: Any = None) -> None:
    event.status = status
    event.processed_at = datetime.now(UTC)
    if errors is not None:
        event.errors = errors if isinstance(errors, dict) else {"_schema": errors}


# Retries back off exponentially with jitter, up to a cap kept below Redis's visibility timeout.
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 300.0


def _retry_delay(event: Event) -> float | None:
    if event.status != EventStatus.RECEIVED or event.attempts == 0:
        return None
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** (event.attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def _send_pending(
    store: Store, event_id: str, pending: list[dict[str, Any]], send: SendTask
) -> None:
    """Send the event's follow-up tasks, then clear them; a crash in between resends them."""
    for task in pending:
        send(task["name"], task["args"])
    with store.session() as session:
        session.get(Event, event_id).pending_tasks = None
