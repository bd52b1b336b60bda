"""Retention and erasure: the store keeps content only as long as the owner says.

``purge`` removes what ``RETENTION_DAYS`` lets go: a conversation with everything about it once
its newest event is that old and nothing about it is pending, an event with no conversation by
its own age, replicas, videos and documents by their last status. ``erase`` removes one
conversation, replica, video or document now, wherever this service holds it (the store, the
messages queued in Redis, the spool), and leaves a tombstone (``Erasure``) so that a later
callback for it is acked and dropped.

Both delete in statements of at most ``BATCH_ROWS`` rows, each its own transaction, so intake
and workers never wait long on them; children go before their parents, and each step's
condition stays true while its rows go, so a step ends when it deletes nothing more.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from sqlalchemy import ColumnElement, Select, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, aliased

from schemas.broker import PRIORITY_SUFFIXES, UNACKED_KEY
from schemas.messages import QUEUES
from schemas.spool_files import SUFFIX
from workers import audit
from workers.queries import resource_models
from workers.storage.state import PENDING as VERIFICATION_PENDING
from workers.store.db import Store
from workers.store.models import (
    Alert,
    AlertAttempt,
    AlertDelivery,
    AuditEntry,
    Base,
    Conversation,
    ConversationEventRow,
    DeliveryStatus,
    Erasure,
    Event,
    EventStatus,
    ForwardAttempt,
    ForwardDelivery,
    Objective,
    Recording,
)

BATCH_ROWS = 1000  # rows per statement, and so per transaction
RESOURCES: dict[str, type[Base]] = resource_models()  # replicas, videos, documents by kind
TARGET_KINDS = ("conversation", *RESOURCES)
# Callback kinds whose events belong to a conversation (the others, to a resource).
CONVERSATION_KINDS = frozenset({"conversation", "guardrail", "objective"})
_DELIVERY_DONE = tuple(DeliveryStatus.FINAL)


@dataclass(frozen=True)
class Target:
    """One thing to erase: a conversation, replica, video or document, by id."""

    kind: str
    id: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    def events(self) -> ColumnElement[bool]:
        """Which stored events are about it."""
        if self.kind == "conversation":
            return Event.conversation_id == self.id
        # Resource events have no column of their own: their key starts "<kind>:<id>:".
        prefix = f"{self.kind}:{self.id}:"
        return (Event.kind == self.kind) & Event.event_key.startswith(prefix, autoescape=True)


def targets_of(message: dict[str, Any]) -> list[str]:
    """The tombstone keys a queued event (an ``EventMessage``) would be stored under."""
    keys = []
    if message.get("conversation_id"):
        keys.append(f"conversation:{message['conversation_id']}")
    kind, key = message.get("kind"), message.get("event_key") or ""
    if kind in RESOURCES and key.startswith(f"{kind}:"):
        keys.append(":".join(key.split(":", 2)[:2]))
    return keys


def owns(target: Target, message: dict[str, Any]) -> bool:
    return target.key in targets_of(message)


# --- what goes, step by step -----------------------------------------------------------------

Step = tuple[type[Base], ColumnElement[bool]]


def _steps(events: ColumnElement[bool], conversations: Select | list[str] | None) -> list[Step]:
    """Every row about the events matching ``events`` (and the conversations ``conversations``
    selects), children before their parents."""
    event_ids = select(Event.id).where(events)
    by_conversation = (
        (lambda column: column.in_(conversations)) if conversations is not None else None
    )

    def about(event_column: InstrumentedAttribute, conversation_column: Any) -> ColumnElement:
        mine = event_column.in_(event_ids)
        return mine if by_conversation is None else or_(mine, by_conversation(conversation_column))

    deliveries = select(ForwardDelivery.id).where(ForwardDelivery.event_id.in_(event_ids))
    alerts = about(Alert.event_id, Alert.conversation_id)
    alert_deliveries = select(AlertDelivery.id).where(
        AlertDelivery.alert_id.in_(select(Alert.id).where(alerts))
    )
    steps: list[Step] = [
        (ForwardAttempt, ForwardAttempt.delivery_id.in_(deliveries)),
        (ForwardDelivery, ForwardDelivery.event_id.in_(event_ids)),
        (AlertAttempt, AlertAttempt.delivery_id.in_(alert_deliveries)),
        (AlertDelivery, AlertDelivery.alert_id.in_(select(Alert.id).where(alerts))),
        (Alert, alerts),
        *((model, about(model.event_id, model.conversation_id)) for model in _event_rows()),
    ]
    if conversations is not None:
        steps += [
            (Objective, by_conversation(Objective.conversation_id)),
            (Recording, by_conversation(Recording.conversation_id)),
        ]
    steps.append((Event, events))
    if conversations is not None:
        steps.append((Conversation, by_conversation(Conversation.conversation_id)))
    return steps


def _event_rows() -> list[type[Base]]:
    """Every table of rows an event adds to its conversation (guardrail triggers, post-call
    actions, tool deliveries...): a new one is covered without a line here."""
    return [
        mapper.class_
        for mapper in Base.registry.mappers
        if issubclass(mapper.class_, ConversationEventRow)
    ]


def _run(store: Store, steps: Iterable[Step], dry_run: bool = False) -> Counter[str]:
    """Delete (or, ``dry_run``, count) each step's rows, ``BATCH_ROWS`` per transaction."""
    removed: Counter[str] = Counter()
    for model, where in steps:
        (key,) = model.__table__.primary_key.columns
        name = model.__tablename__
        if dry_run:
            with store.session() as session:
                removed[name] += session.scalar(
                    select(func.count()).where(where).select_from(model)
                )
            continue
        batch = select(key).where(where).limit(BATCH_ROWS).correlate(None)
        while True:
            with store.begin() as connection:
                gone = connection.execute(delete(model).where(key.in_(batch))).rowcount
            removed[name] += gone
            if gone < BATCH_ROWS:
                break
    return +removed


# --- retention -------------------------------------------------------------------------------

# Inner references get aliases of their own: a subquery on the table its statement deletes from
# (or selects from) would otherwise be correlated to that statement's rows.
_EVENT = aliased(Event)
_DELIVERY = aliased(ForwardDelivery)
_ALERT = aliased(Alert)
_ALERT_DELIVERY = aliased(AlertDelivery)


def _pending_event(event: Any = Event) -> ColumnElement[bool]:
    """Events still to be processed (or waiting for their retry)."""
    return event.status == EventStatus.RECEIVED


def _pending_delivery(where: ColumnElement[bool]) -> ColumnElement[bool]:
    """A forward or hook delivery not yet done of an event (``_EVENT``) matching ``where``."""
    return exists(
        select(_DELIVERY.id)
        .join(_EVENT, _EVENT.id == _DELIVERY.event_id)
        .where(where, _DELIVERY.status.not_in(_DELIVERY_DONE))
    )


def _pending_alert(where: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists(
        select(_ALERT_DELIVERY.id)
        .join(_ALERT, _ALERT.id == _ALERT_DELIVERY.alert_id)
        .where(where, _ALERT_DELIVERY.status.not_in(_DELIVERY_DONE))
    )


def expired_conversations(cutoff: datetime) -> Select:
    """Conversations last touched before ``cutoff`` with nothing about them pending."""
    mine = _EVENT.conversation_id == Conversation.conversation_id
    recent_or_pending = or_(_EVENT.received_at >= cutoff, _pending_event(_EVENT))
    verifying = exists(
        select(Recording.conversation_id).where(
            Recording.conversation_id == Conversation.conversation_id,
            Recording.verification_status == VERIFICATION_PENDING,
        )
    )
    return select(Conversation.conversation_id).where(
        Conversation.updated_at < cutoff,
        ~exists(select(_EVENT.id).where(mine, recent_or_pending)),
        ~_pending_delivery(mine),
        ~_pending_alert(_ALERT.conversation_id == Conversation.conversation_id),
        ~verifying,
    )


def _expired_loose_events(cutoff: datetime) -> ColumnElement[bool]:
    """Events of no conversation (replicas, videos, documents, bodies that were no callback),
    by their own age, once final and delivered."""
    return (
        Event.conversation_id.is_(None)
        & (Event.received_at < cutoff)
        & ~_pending_event()
        & ~_pending_delivery(_EVENT.id == Event.id)
        & ~_pending_alert(_ALERT.event_id == Event.id)
    )


def _expired_resources(cutoff: datetime) -> list[Step]:
    return [(model, model.status_at < cutoff) for model in RESOURCES.values()]


def _expired_alerts(cutoff: datetime) -> list[Step]:
    """Alerts about neither a conversation nor an event (a pipeline stage's), once sent."""
    loose = Alert.conversation_id.is_(None) & Alert.event_id.is_(None) & (Alert.raised_at < cutoff)
    alerts = select(Alert.id).where(loose, ~_pending_alert(_ALERT.id == Alert.id))
    deliveries = select(AlertDelivery.id).where(AlertDelivery.alert_id.in_(alerts))
    return [
        (AlertAttempt, AlertAttempt.delivery_id.in_(deliveries)),
        (AlertDelivery, AlertDelivery.alert_id.in_(alerts)),
        (Alert, Alert.id.in_(alerts)),
    ]


def purge(
    store: Store,
    older_than_days: float,
    dry_run: bool = False,
    actor: str = "beat",
    audit_days: int = 0,
) -> Counter[str]:
    """Remove (or count) everything finished whose newest event is ``older_than_days`` old, and
    audit entries older than ``audit_days`` (0: none); the rows per table. Pending work is never
    touched. A purge that removed something is in the audit trail."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=older_than_days)
    conversations = expired_conversations(cutoff)
    # Events of an expired conversation that came in after the conversation was selected (a
    # late callback) are newer than the cutoff or pending, so they stay, with their rows.
    theirs = Event.conversation_id.in_(conversations) & (Event.received_at < cutoff)
    steps = [
        *_steps(theirs & ~_pending_event(), conversations),
        *_steps(_expired_loose_events(cutoff), None),
        *_expired_resources(cutoff),
        *_expired_alerts(cutoff),
    ]
    if audit_days:
        steps.append((AuditEntry, AuditEntry.at < now - timedelta(days=audit_days)))
    removed = _run(store, steps, dry_run)
    if removed and not dry_run:
        compact(store)
        audit.record(store, actor, "purge", None, older_than_days=older_than_days, **removed)
    return removed


# --- erasure ---------------------------------------------------------------------------------


@dataclass
class Erased:
    target: Target
    erased_by: str
    erased_at: datetime
    rows: Counter[str] = field(default_factory=Counter)
    queued: int = 0  # messages taken out of Redis
    spooled: int = 0  # files taken out of the spool

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.target.kind,
            "id": self.target.id,
            "erased_at": self.erased_at.isoformat(),
            "erased_by": self.erased_by,
            "rows": sum(self.rows.values()),
            "tables": dict(self.rows),
            "queued_messages": self.queued,
            "spooled_files": self.spooled,
        }


def erase(
    store: Store,
    target: Target,
    erased_by: str,
    client: redis.Redis | None,
    spool_dir: str | os.PathLike[str] | None,
) -> Erased:
    """Erase ``target`` from the store, Redis's queues and the spool; leave its tombstone.

    The tombstone is committed first: from then on a worker drops every message about it, so
    whatever is in flight while the rest goes cannot store it again.
    """
    if client is not None:
        client.ping()  # Redis unreachable: fail before anything is changed, not half way
    done = Erased(target, erased_by[:255], datetime.now(UTC))
    _tombstone(store, done)
    needles = _needles(store, target)
    done.queued = scrub_queues(client, target, needles) if client is not None else 0
    done.rows = _run(store, _target_steps(target))
    if client is not None:  # what a worker queued in the meantime (its tasks find nothing)
        done.queued += scrub_queues(client, target, needles)
    # Again: on PostgreSQL a worker that looked for the tombstone just before it was committed
    # may have committed its event after the first pass (SQLite serialises the two).
    done.rows.update(_run(store, _target_steps(target)))
    done.spooled = scrub_spool(spool_dir, target) if spool_dir is not None else 0
    if client is not None:
        rewrite_aof(client)
    with store.begin() as connection:
        rows = sum(done.rows.values())
        connection.execute(
            update(Erasure).where(Erasure.target == target.key).values(rows=Erasure.rows + rows)
        )
    compact(store)
    audit.record(
        store, done.erased_by, "erase", target.key, rows=rows, queued=done.queued,
        spooled=done.spooled,
    )  # fmt: skip
    return done


def _target_steps(target: Target) -> list[Step]:
    if target.kind == "conversation":
        return _steps(target.events(), [target.id])
    model = RESOURCES[target.kind]
    (key,) = model.__table__.primary_key.columns
    return [*_steps(target.events(), None), (model, key == target.id)]


def _tombstone(store: Store, done: Erased) -> None:
    values = {
        "target": done.target.key,
        "erased_at": done.erased_at,
        "erased_by": done.erased_by,
        "rows": 0,
    }
    with store.begin() as connection:
        found = connection.execute(select(Erasure.target).where(Erasure.target == done.target.key))
        if found.first() is None:
            connection.execute(insert(Erasure).values(values))
        else:  # erased again: the latest request is the one on record
            connection.execute(
                update(Erasure)
                .where(Erasure.target == done.target.key)
                .values(erased_at=done.erased_at, erased_by=done.erased_by)
            )


def erased(connection: Any, message: dict[str, Any]) -> bool:
    """Whether the event in ``message`` is about something erased (then it is dropped)."""
    keys = targets_of(message)
    if not keys:
        return False
    query = select(Erasure.target).where(Erasure.target.in_(keys)).limit(1)
    return connection.execute(query).first() is not None


def tombstones(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.scalars(select(Erasure).order_by(Erasure.erased_at.desc()).limit(limit))
        return [
            {"target": r.target, "erased_at": r.erased_at.isoformat(), "erased_by": r.erased_by,
             "rows": r.rows}
            for r in rows
        ]  # fmt: skip


def _needles(store: Store, target: Target) -> frozenset[str]:
    """Strings whose presence in a queued task's arguments ties it to ``target``: its id, its
    events' ids, its alerts' causes."""
    with store.session() as session:
        event_ids = set(session.scalars(select(Event.id).where(target.events())))
        alerts = or_(Alert.event_id.in_(event_ids), Alert.conversation_id == target.id)
        causes = set(session.scalars(select(Alert.cause_key).where(alerts)))
    return frozenset({target.id, *event_ids, *causes})


# --- Redis and the spool ---------------------------------------------------------------------


def scrub_queues(client: redis.Redis, target: Target, needles: frozenset[str]) -> int:
    """Take every queued (and taken but unacked) message about ``target`` out of Redis."""
    removed = 0
    for queue in QUEUES:
        for suffix in PRIORITY_SUFFIXES:
            key = queue + suffix
            for raw in client.lrange(key, 0, -1):
                if _about(_task_args(raw), target, needles):
                    removed += client.lrem(key, 0, raw)
    for tag, raw in client.hscan_iter(UNACKED_KEY):
        try:
            envelope = orjson.dumps(orjson.loads(raw)[0])
        except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
            continue
        if _about(_task_args(envelope), target, needles):
            # The worker holding it still runs it: its event or delivery is gone by then, or
            # the tombstone drops it. Its ack finds nothing to remove, which is harmless.
            removed += client.hdel(UNACKED_KEY, tag)
            client.zrem(UNACKED_KEY + "_index", tag)
    return removed


def _task_args(raw: bytes) -> list[Any]:
    """A queued Celery message's positional and keyword arguments, whichever way its body is
    encoded (our lean envelope: JSON text; Celery's own retries: base64)."""
    try:
        envelope = orjson.loads(raw)
        body = envelope["body"]
        if (envelope.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, *_ = orjson.loads(body)
    except (orjson.JSONDecodeError, binascii.Error, KeyError, TypeError, ValueError):
        return []
    return [*args, *(kwargs or {}).values()] if isinstance(args, list) else []


def _about(args: list[Any], target: Target, needles: frozenset[str]) -> bool:
    for arg in args:
        if isinstance(arg, str) and arg in needles:
            return True
        if isinstance(arg, dict):
            if "event_key" in arg and owns(target, arg):
                return True
            if any(isinstance(v, str) and v in needles for v in arg.values()):
                return True
    return False


def scrub_spool(directory: str | os.PathLike[str], target: Target) -> int:
    """Overwrite and remove every spooled event about ``target`` (``rejected/`` too)."""
    removed = 0
    root = Path(directory)
    for folder in (root, root / "rejected"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.endswith(SUFFIX) and _spooled_about(path, target):
                _shred(path)
                removed += 1
    return removed


def _spooled_about(path: Path, target: Target) -> bool:
    try:
        message = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(message, dict) and owns(target, message)


def _shred(path: Path) -> None:
    """Zeros over the content before the unlink: a plain unlink leaves it in free blocks."""
    try:
        with path.open("r+b") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(0)
            file.write(b"\0" * size)
            file.flush()
            os.fsync(file.fileno())
        path.unlink()
    except FileNotFoundError:  # drained meanwhile: the worker drops it (the tombstone)
        pass


def _merge_search_index(store: Store) -> None:
    """FTS5 keeps a removed line's words in its older segments until they are merged: merge
    them all now, so that transcript search's index keeps nothing erased or purged."""
    with store.begin() as connection:
        found = connection.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'transcript_search'"
        ).first()
        if found is not None:
            connection.exec_driver_sql(
                "INSERT INTO transcript_search (transcript_search) VALUES ('optimize')"
            )


def rewrite_aof(client: redis.Redis) -> bool:
    """Ask Redis to rewrite its append-only file, which still holds the messages taken out;
    False where it cannot say or refuses (managed Redis often disables CONFIG: docs/privacy.md)."""
    try:
        if client.config_get("appendonly").get("appendonly") != "yes":
            return False
        client.bgrewriteaof()
    except redis.ResponseError:
        return False
    return True


# --- SQLite's leftovers ----------------------------------------------------------------------


def compact(store: Store, attempts: int = 20) -> bool:
    """On SQLite, copy the write-ahead log into the database and truncate it to nothing, so
    deleted content survives in neither (``secure_delete`` zeroes the freed space); True when
    the log is empty. PostgreSQL: nothing here (see docs/privacy.md)."""
    if store.engine.dialect.name != "sqlite":
        return True
    _merge_search_index(store)
    for _ in range(attempts):
        # Outside any transaction (the engine begins one on first use, and a checkpoint cannot
        # run in one): the driver's own connection, in autocommit as the store sets it.
        connection = store.engine.raw_connection()
        try:
            busy, _log, _copied = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            connection.close()
        if not busy:
            return True
        time.sleep(0.05)  # a reader holds an older snapshot: let it finish
    return False
