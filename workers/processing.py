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
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from schemas.callbacks import SCHEMAS_BY_KIND
from schemas.messages import RAISE_ALERT, EventMessage
from workers.alerts.rules import AlertPolicy, alert_for
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


def process(
    store: Store,
    message: EventMessage,
    send: SendTask,
    max_attempts: int,
    alerts: AlertPolicy = AlertPolicy(),  # noqa: B008  (frozen, so one shared default is safe)
) -> Outcome:
    with store.session() as session:
        event = store_event(session, message)
        if event.status not in EventStatus.FINAL:
            _run_handler(session, event, max_attempts, alerts)
        outcome = Outcome(event.id, event.status, _retry_delay(event))
        pending = list(event.pending_tasks or [])
    if pending:
        _send_pending(store, event.id, pending, send)
    return outcome


def store_event(session: Session, message: EventMessage) -> Event:
    """Insert the event unless its key is stored; return the stored row, locked."""
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
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
    session.execute(dialect.insert(Event).values(**row).on_conflict_do_nothing())
    query = select(Event).where(Event.event_key == message["event_key"]).with_for_update()
    return session.execute(query.execution_options(populate_existing=True)).scalar_one()


def _run_handler(session: Session, event: Event, max_attempts: int, alerts: AlertPolicy) -> None:
    raw = orjson.loads(event.body)
    if event.kind not in SCHEMAS_BY_KIND:
        # No shape matched at the receiver (or a replay of such a body): nothing can handle it.
        errors = event.errors or {"_schema": ["Not a Tavus callback: no known shape matches."]}
        _finish(event, EventStatus.QUARANTINED, errors=errors)
        return
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
    try:
        with session.begin_nested():  # a failing handler undoes its own changes only
            handler(context)
    except Exception as exc:  # a boundary: recorded, then retried or dead-lettered
        log.warning("event %s attempt %d failed: %r", event.id, event.attempts, exc)
        event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        if event.attempts >= max_attempts:
            _finish(event, EventStatus.FAILED)
        return
    _ask_alert_rules(context, alerts)
    event.pending_tasks = context.follow_ups or None
    _finish(event, EventStatus.PROCESSED)


def _ask_alert_rules(context: HandlerContext, alerts: AlertPolicy) -> None:
    """Queue the event's alert, if it deserves one, through the outbox: it is raised only once
    the event is committed as processed."""
    try:
        alert = alert_for(context.event, context.data, alerts)
    except Exception as exc:  # a boundary: a faulty rule must not cost the event itself
        log.exception("alert rules failed on event %s", context.event.id)
        context.event.last_error = f"alert rules: {type(exc).__name__}: {exc}"[:2000]
        return
    if alert is not None:
        context.then(RAISE_ALERT, alert)


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
    return backoff(event.attempts)


def backoff(attempt: int, cap: float = RETRY_CAP_SECONDS) -> float:
    """Seconds before attempt ``attempt + 1``: doubling from 1 s, capped, with half as jitter."""
    ceiling = min(cap, RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** min(attempt - 1, 32))
    return random.uniform(ceiling / 2, ceiling)


def _send_pending(
    store: Store, event_id: str, pending: list[dict[str, Any]], send: SendTask
) -> None:
    """Send the event's follow-up tasks, then clear them; a crash in between resends them."""
    for task in pending:
        send(task["name"], task["args"])
    with store.session() as session:
        session.get(Event, event_id).pending_tasks = None
