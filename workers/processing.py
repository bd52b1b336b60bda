"""Processing one event: store it once, run its handler once, record how it went.

Celery delivers at least once (``acks_late``), so every step here is idempotent: the event row
is unique on its key, a row already final is left alone, and handlers merge rather than append.
This module knows nothing of Celery; the task in ``workers.tasks.events`` wraps it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from sqlalchemy import bindparam, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from schemas import tolerant, tracing
from schemas.callbacks import KIND_TABLE
from schemas.messages import DELIVER_ALERT, RAISE_ALERT, EventMessage
from workers import errors, lifecycle, retry
from workers.alerts import ledger
from workers.alerts.pipeline import pipeline_failure
from workers.alerts.rules import AlertPolicy, alert_for
from workers.handlers import HandlerContext, handler_for
from workers.handlers.registry import Handler
from workers.store.db import Store
from workers.store.models import Erasure, Event, EventStatus
from workers.store.records import Records, Row

log = logging.getLogger(__name__)

SendTask = Callable[[str, list[Any]], None]
ERASED = "erased"  # the outcome of an event about something erased: dropped


@dataclass(frozen=True)
class Outcome:
    event_id: str
    status: str
    retry_in: float | None = None  # seconds until the next attempt; None: done
    alert: str | None = None  # the severity of the alert this attempt raised and committed


@dataclass(frozen=True)
class Plan:
    """What a body calls for, known before anything is written: parsed, validated, routed."""

    status: str  # PROCESSED when a handler will run (its transaction decides), or a final one
    raw: Any = None  # the body as JSON
    data: Any = None  # as its schema loaded it
    errors: Any = None
    occurred_at: datetime | None = None
    handler: Handler | None = None
    warnings: Any = None  # what the tolerant reader left out, by path


def plan(body: str, kind: str | None, event_type: str | None, errors: Any) -> Plan:
    if errors:  # quarantined by the receiver
        return Plan(EventStatus.QUARANTINED, errors=errors)
    if kind not in KIND_TABLE:
        # No shape matched at the receiver (or a replay of such a body): nothing can handle it.
        return Plan(EventStatus.QUARANTINED, errors=_NO_SHAPE)
    raw = orjson.loads(body)
    # The receiver checks less (a transcript's entries), or a deploy came in between.
    table = KIND_TABLE[kind]
    reading = tolerant.read(table.schema, raw, table.identity)
    if reading.data is None:
        return Plan(EventStatus.QUARANTINED, errors=reading.errors)
    data = reading.data
    occurred_at = _first_date(data.get("timestamp"), data.get("updated_at"))
    handler = handler_for(kind, event_type)
    status = EventStatus.PROCESSED if handler else EventStatus.UNHANDLED
    return Plan(status, raw, data, None, occurred_at, handler, reading.warnings)


def _first_date(*candidates: Any) -> datetime | None:
    """The event's own time; a schema that left a date unparsed must not reach the INSERT."""
    return next((value for value in candidates if isinstance(value, datetime)), None)


_NO_SHAPE = {"_schema": ["Not a Tavus callback: no known shape matches."]}


class HandlerFailed(Exception):
    """The event's content made a step fail (``stage``: "plan" or "handler"): the transaction is
    rolled back, then the attempt is recorded, bounded, and dead-lettered when they run out."""

    def __init__(self, cause: Exception, stage: str = "handler") -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.stage = stage


def _planned(message: EventMessage) -> Plan:
    """``plan``, inside the failure boundary: loading, dates and routing depend on the body."""
    try:
        return plan(message["body"], message["kind"], message["event_type"], message["errors"])
    except Exception as exc:  # a boundary: the body is stored first, the attempt recorded
        if errors.is_transient(exc):
            raise
        raise HandlerFailed(exc, stage="plan") from exc


def process(
    store: Store,
    message: EventMessage,
    send: SendTask,
    max_attempts: int,
    alerts: AlertPolicy = AlertPolicy(),  # noqa: B008  (frozen, so one shared default is safe)
) -> Outcome:
    """Store the event and run its handler in one transaction; a repeat changes nothing.

    A new event is inserted with the outcome its plan expects (``processed``, say) and its
    handler runs in the same transaction: if the handler fails, the transaction is rolled back,
    row and all, and a second one records the failed attempt. The usual case writes the event
    once and reads nothing back.
    """
    expected: Plan | None = None
    raised: str | None = None
    policy = None if message.get("settled") else alerts  # its alerts went where it came from
    try:
        expected = _planned(message)
        with _transaction(store) as records:
            # Inserted unless erased, in one statement: most events cost no read of the
            # tombstones of their own (a round trip each on PostgreSQL).
            event = store_event(records, message, expected)
            if event is None:  # the key is stored or the subject erased (the rarer cases)
                if lifecycle.erased(records.connection, message):
                    return Outcome(message["event_id"], ERASED)  # acked, never stored
                # A repeat, or a retry of a failed attempt.
                event = _locked_event(records, message["event_key"])
                if event.status not in EventStatus.FINAL:
                    raised = _retry(records, event, policy)
            elif expected.handler is not None:
                raised = _handle(records, event, expected, policy)
            outcome = Outcome(event.id, event.status, _retry_delay(event), raised)
            pending = list(event.pending_tasks or [])
    except HandlerFailed as failure:
        # One transaction per event and no savepoint on the way (it costs every event two more
        # statements): a failure, the rare case, pays for a second transaction instead. The
        # body is stored whatever failed, before anything else is tried again.
        with _transaction(store) as records:
            event = store_event(records, message, expected, failed=failure)
            if event is None:
                if lifecycle.erased(records.connection, message):
                    return Outcome(message["event_id"], ERASED)  # erased since, or the plan failed
                event = _locked_event(records, message["event_key"])
                occurred_at = expected.occurred_at if expected else event.occurred_at
                _record_failure(event, failure, occurred_at)
            log.warning("event %s attempt %d failed: %s", event.id, event.attempts, failure)
            if event.attempts >= max_attempts:
                _dead_letter(event, failure.stage, str(failure))
            records.save()
            outcome = Outcome(event.id, event.status, _retry_delay(event))
            pending = list(event.pending_tasks or [])
    if pending:
        _send_pending(store, event.id, pending, send)
    return outcome


def dead_letter(
    store: Store, message: EventMessage, error: BaseException, attempts: int, send: SendTask
) -> Outcome:
    """Record an event whose processing kept failing outside its handler: ``failed``, at stage
    "store", with the error and the raw body, and its alert. Replay sends it again."""
    failure = HandlerFailed(error, stage="store") if isinstance(error, Exception) else None
    with _transaction(store) as records:
        if lifecycle.erased(records.connection, message):
            return Outcome(message["event_id"], ERASED)
        event = store_event(records, message, None, failed=failure)
        if event is None:
            event = _locked_event(records, message["event_key"])
        if event.status in EventStatus.FINAL:
            return Outcome(event.id, event.status)
        event.attempts = max(event.attempts, attempts)
        _dead_letter(event, "store", str(failure))
        records.save()
        outcome, pending = Outcome(event.id, event.status), list(event.pending_tasks or [])
    _send_pending(store, event.id, pending, send)
    return outcome


def store_event(
    records: Records,
    message: EventMessage,
    expected: Plan | None = None,
    failed: HandlerFailed | None = None,
) -> Row | None:
    """Insert the event as ``expected`` unless its key is stored or what it is about erased
    (then None: ``lifecycle.erased`` tells which).

    Without a plan, the event is stored as received (or quarantined), for a handler to run later.
    """
    status = expected.status if expected else EventStatus.RECEIVED
    if failed is not None:
        status = EventStatus.RECEIVED
    elif message["errors"]:
        status = EventStatus.QUARANTINED
    handled = expected is not None and expected.handler is not None
    row = {
        "id": message["event_id"],
        "event_key": message["event_key"],
        "kind": message["kind"],
        "event_type": message["event_type"],
        "conversation_id": message["conversation_id"],
        "source": message.get("source", "callback"),
        "received_at": datetime.fromtimestamp(message["received_at"], UTC),
        "occurred_at": expected.occurred_at if expected else None,
        "warnings": expected.warnings if expected else None,
        "failed_stage": None,
        "body": message["body"],
        "errors": (expected.errors if expected else None) or message["errors"],
        "status": status,
        "attempts": 1 if handled or failed else 0,
        "last_error": str(failed)[:2000] if failed else None,
        # Waiting for (another) attempt, or quarantined by the receiver: not processed. Else
        # processed as of this transaction, which the handler's writes commit with.
        "processed_at": None if status == EventStatus.RECEIVED or message["errors"] else now(),
        "pending_tasks": None,
    }
    insert = _INSERT_EVENT[records.connection.dialect.name]
    targets = {_ERASURE_TARGETS: lifecycle.targets_of(message)}
    if records.connection.execute(insert, {**row, **targets}).first() is None:
        return None
    # The INSERT holds the new row's lock and we know every column: hold the row as it is
    # rather than read it back.
    return records.held(Event, row)


def _locked_event(records: Records, event_key: str) -> Row:
    event = records.lock(Event, event_key=event_key)
    if event is None:  # the INSERT found the key a moment ago, and rows are never deleted
        raise LookupError(f"no event with key {event_key!r}")
    return event


# ``INSERT INTO events SELECT <the row> WHERE NOT EXISTS (<a tombstone of its subject>)
# ON CONFLICT DO NOTHING RETURNING id``: built once, since building a statement per event costs
# more than running it. Each value is a parameter of its column's type (content sealed, dates
# cast on PostgreSQL); the tombstone keys are ``lifecycle.targets_of`` the message.
_ERASURE_TARGETS = "erasure_targets"


def _insert_event(dialect: Any) -> Any:
    table = Event.__table__
    tombstone = select(Erasure.target).where(
        Erasure.target.in_(bindparam(_ERASURE_TARGETS, expanding=True))
    )
    values = select(*(bindparam(c.name, type_=c.type).label(c.name) for c in table.c)).where(
        ~exists(tombstone)
    )
    insert = dialect.insert(table).from_select([c.name for c in table.c], values)
    return insert.on_conflict_do_nothing().returning(table.c.id)


_INSERT_EVENT = {dialect.dialect.name: _insert_event(dialect) for dialect in (postgresql, sqlite)}


def _traced(event: Row) -> dict[str, Any]:
    """What the handler's span says of its event (only read with tracing on)."""
    facts = ("kind", "event_type", "conversation_id")
    return {"tavus.event_id": event.id, **{f"tavus.{name}": getattr(event, name) for name in facts}}


def _handle(records: Records, event: Row, expected: Plan, alerts: AlertPolicy | None) -> str | None:
    """Run the handler; its writes are saved here so that they too fail inside this boundary.
    ``alerts`` None: the rules are not asked (an import of an event settled elsewhere).
    Returns the severity of the alert the event raised, if any."""
    context = HandlerContext(records=records, event=event, raw=expected.raw, data=expected.data)
    try:
        with tracing.span(f"handle {event.event_type or event.kind}", attributes=_traced(event)):
            expected.handler(context)
        raised = None if alerts is None else _raise_alert(context, alerts)
        if context.follow_ups:
            event.pending_tasks = context.follow_ups
        records.save()
        return raised
    except Exception as exc:  # a boundary: the caller rolls back, records, retries or gives up
        if errors.is_transient(exc):
            raise  # the store or the network, not the event: the task's policy retries it
        raise HandlerFailed(exc) from exc


def _retry(records: Records, event: Row, alerts: AlertPolicy | None) -> str | None:
    """Another attempt at an event stored earlier whose handler failed (or never ran); as
    ``_handle``, the severity of the alert it raised."""
    try:
        again = plan(event.body, event.kind, event.event_type, event.errors)
    except Exception as exc:  # a boundary, as in _planned
        if errors.is_transient(exc):
            raise
        raise HandlerFailed(exc, stage="plan") from exc
    event.occurred_at = again.occurred_at
    event.warnings = again.warnings
    if again.handler is None:
        _finish(event, again.status, errors=again.errors)
        records.save()
        return None
    event.attempts += 1
    _finish(event, EventStatus.PROCESSED)
    return _handle(records, event, again, alerts)


def _dead_letter(event: Row, stage: str, error: str) -> None:
    """Failed for good (until replayed): say where, keep the error, raise one alert after the
    commit (through the outbox, so a crash in between still sends it). Through the raise task,
    not in this transaction as a rule's alert is: a dead letter is rare, and at stage "store"
    the store may be what keeps failing, so the alert is stored and retried on its own."""
    _finish(event, EventStatus.FAILED)
    event.failed_stage = stage
    event.last_error = error[:2000]
    alert = pipeline_failure(
        f"events.{stage}",
        event.id,
        error,
        conversation_id=event.conversation_id,
        event_id=event.id,
        attempts=event.attempts,
    )
    event.pending_tasks = [*(event.pending_tasks or []), {"name": RAISE_ALERT, "args": [alert]}]


def _record_failure(event: Row, failure: HandlerFailed, occurred_at: datetime | None) -> None:
    event.occurred_at = occurred_at
    event.attempts += 1
    event.last_error = str(failure)[:2000]


def now() -> datetime:
    return datetime.now(UTC)


def _raise_alert(context: HandlerContext, alerts: AlertPolicy) -> str | None:
    """Raise the event's alert, if it deserves one, in the event's own transaction: stored (once
    per cause) by the commit that marks the event processed, or not at all. Only its deliveries
    go through the outbox, one task per channel still to send. Returns its severity."""
    try:
        found = alert_for(context.event, context.data, alerts)
        if found is None:
            return None
        alert = ledger.normalise(found)
        channels = alerts.channels(alert["severity"])
    except Exception as exc:  # a boundary: a faulty rule must not cost the event itself
        log.exception("alert rules failed on event %s", context.event.id)
        context.event.last_error = f"alert rules: {type(exc).__name__}: {exc}"[:2000]
        return None
    # As the raise task would (the same ledger), so a redelivered event finds its cause stored
    # and its deliveries claimed: nothing is sent twice.
    for channel in ledger.record_alert(context.records.connection, alert, channels, now()):
        context.then(DELIVER_ALERT, alert["cause_key"], channel)
    return alert["severity"]


def _finish(event: Row, status: str, errors: Any = None) -> None:
    event.status = status
    event.processed_at = now()
    if errors is not None:
        event.errors = errors


def _retry_delay(event: Row) -> float | None:
    """Seconds until the next attempt at an event whose handler failed; None: final."""
    if event.status != EventStatus.RECEIVED or event.attempts == 0:
        return None
    return retry.backoff(event.attempts, retry.MAX_BACKOFF_SECONDS)


def _send_pending(
    store: Store, event_id: str, pending: list[dict[str, Any]], send: SendTask
) -> None:
    """Send the event's follow-up tasks; the next transaction clears its outbox."""
    for task in pending:
        send(task["name"], task["args"])
    _SENT.setdefault(store, []).append(event_id)


# Events whose follow-ups this process has sent, by store. Their outboxes are cleared by the
# next event's transaction rather than by one of their own: that was a commit (on PostgreSQL, a
# wait for the disk) for every event with a follow-up. Until then, or if the process stops
# first, a redelivery of such an event sends its tasks again, as after a crash between the
# send and the clear: they are idempotent (an alert's delivery is claimed once per channel, a
# verification runs once per round).
_SENT: WeakKeyDictionary[Store, list[str]] = WeakKeyDictionary()

# One statement, built once: no need to load the rows to clear a column.
_CLEAR_SENT = (
    Event.__table__.update()
    .where(Event.__table__.c.id.in_(bindparam("event_ids", expanding=True)))
    .values(pending_tasks=None)
)


@contextmanager
def _transaction(store: Store) -> Iterator[Records]:
    """One transaction of an event's, which also clears the outboxes sent since the last one."""
    sent = list(_SENT.get(store, ()))
    with store.begin() as connection:
        if sent:
            connection.execute(_CLEAR_SENT, {"event_ids": sent})
        yield Records(connection)
    if sent:
        del _SENT[store][: len(sent)]
