"""Retention and erasure on the store (SQLite and PostgreSQL): finished old conversations are
purged whole, pending work never is; an erased conversation leaves nothing but its tombstone,
and a later callback for it is dropped."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import event, func, select, update

from schemas.classify import classify
from schemas.messages import event_message
from workers import lifecycle, processing
from workers.store.db import Store
from workers.store.models import (
    Alert,
    AlertDelivery,
    Base,
    Conversation,
    DeliveryStatus,
    Erasure,
    Event,
    EventStatus,
    ForwardAttempt,
    ForwardDelivery,
    Replica,
)

DAY = 86400.0
OLD = 100  # days: past the default retention of 90


def conversation_bodies(conversation_id: str, marker: str) -> list[dict[str, Any]]:
    """A conversation's content callbacks, each carrying ``marker``."""
    base = {"conversation_id": conversation_id, "timestamp": "2025-07-11T06:50:01.100000Z"}
    return [
        {
            **base,
            "event_type": "application.transcription_ready",
            "message_type": "application",
            "properties": {"transcript": [{"role": "user", "content": f"I am {marker}"}]},
        },
        {
            **base,
            "event_type": "application.perception_analysis",
            "message_type": "application",
            "properties": {"analysis": f"the user, {marker}, smiled"},
        },
        {
            "conversation_id": conversation_id,
            "objective_name": "get_name",
            "output_variables": {"name": marker},
        },
        {"conversation_id": conversation_id, "properties": {"guardrail": f"no_{marker}"}},
    ]


def feed(store: Store, body: dict[str, Any], days_ago: float = 0) -> str:
    """Process one callback as a worker would, received ``days_ago``; its event id."""
    raw = orjson.dumps(body)
    message = event_message(classify(body, raw), raw, time.time() - days_ago * DAY, "callback")
    outcome = processing.process(store, message, lambda *_: None, max_attempts=3)
    return outcome.event_id


def conversation(store: Store, conversation_id: str, days_ago: float, marker: str = "") -> list:
    ids = [feed(store, b, days_ago) for b in conversation_bodies(conversation_id, marker or "m")]
    with store.begin() as connection:  # the handlers stamped it now; it was last touched then
        at = datetime.now(UTC) - timedelta(days=days_ago)
        connection.execute(
            update(Conversation)
            .where(Conversation.conversation_id == conversation_id)
            .values(updated_at=at)
        )
    return ids


def delivered(store: Store, event_id: str, status: str = DeliveryStatus.DELIVERED) -> None:
    """A forward delivery of the event, with one attempt and its recorded answer."""
    now = datetime.now(UTC)
    with store.session() as session:
        delivery = ForwardDelivery(
            event_id=event_id, destination="sink", source="callback", status=status, attempts=1
        )
        session.add(delivery)
        session.flush()
        session.add(
            ForwardAttempt(
                delivery_id=delivery.id, started_at=now, outcome="delivered", answer="ok"
            )
        )


def alerted(store: Store, conversation_id: str, status: str = DeliveryStatus.DELIVERED) -> None:
    with store.session() as session:
        alert = Alert(
            id=str(uuid.uuid4()),
            cause_key=f"test:{conversation_id}",
            severity="error",
            title="t",
            text=f"about {conversation_id}",
            conversation_id=conversation_id,
            facts={},
            raised_at=datetime.now(UTC) - timedelta(days=OLD),
        )
        session.add(alert)
        session.flush()
        session.add(AlertDelivery(alert_id=alert.id, channel="log", status=status, attempts=1))


def rows(store: Store, model: type[Base], **where: Any) -> int:
    with store.session() as session:
        query = select(func.count()).select_from(model).filter_by(**where)
        return session.scalar(query)


def test_purge_removes_finished_old_conversations_whole_and_never_pending_work(
    store: Store,
) -> None:
    old = conversation(store, "c-old", OLD)
    delivered(store, old[0])
    alerted(store, "c-old")
    pending_delivery = conversation(store, "c-pending-delivery", OLD)
    delivered(store, pending_delivery[0], DeliveryStatus.PENDING)
    conversation(store, "c-pending-alert", OLD)
    alerted(store, "c-pending-alert", DeliveryStatus.PENDING)
    waiting = conversation(store, "c-waiting", OLD)
    with store.begin() as connection:  # its handler failed: waiting for its retry
        connection.execute(
            update(Event).where(Event.id == waiting[0]).values(status=EventStatus.RECEIVED)
        )
    conversation(store, "c-recent", 10)
    feed(store, {"replica_id": "r-old", "status": "ready"}, OLD)
    feed(store, {"replica_id": "r-new", "status": "ready"}, 1)

    would = lifecycle.purge(store, 90, dry_run=True)
    assert would["conversations"] == 1 and would["events"] == 5  # c-old's 4, r-old's 1
    assert would["forward_attempts"] == 1 and would["alerts"] == 1
    assert rows(store, Conversation) == 5  # a dry run removes nothing

    removed = lifecycle.purge(store, 90)
    assert removed == would
    assert rows(store, Conversation, conversation_id="c-old") == 0
    assert rows(store, Event, conversation_id="c-old") == 0
    assert rows(store, ForwardDelivery) == 1  # the pending one
    assert rows(store, Replica) == 1 and rows(store, Replica, replica_id="r-new") == 1
    for kept in ("c-pending-delivery", "c-pending-alert", "c-waiting", "c-recent"):
        assert rows(store, Conversation, conversation_id=kept) == 1, kept
        assert rows(store, Event, conversation_id=kept) == 4, kept

    lifecycle.purge(store, 0)  # everything finished, whatever its age
    assert rows(store, Conversation, conversation_id="c-recent") == 0
    assert rows(store, Replica) == 0
    kept = {"c-pending-delivery", "c-pending-alert", "c-waiting"}
    with store.session() as session:
        assert set(session.scalars(select(Conversation.conversation_id))) == kept


def test_purge_deletes_at_most_batch_rows_per_statement(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "BATCH_ROWS", 3)
    for n in range(4):
        conversation(store, f"c-{n}", OLD)
    deleted: list[int] = []

    def note(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deleted.append(cursor.rowcount)

    event.listen(store.engine, "after_cursor_execute", note)
    try:
        assert lifecycle.purge(store, 90)["events"] == 16
    finally:
        event.remove(store.engine, "after_cursor_execute", note)
    assert max(deleted) == 3 and sum(deleted) > 16  # events, and the rows about them
    assert rows(store, Event) == 0 and rows(store, Conversation) == 0


def test_erasure_leaves_a_tombstone_and_drops_later_callbacks(store: Store) -> None:
    marker = f"M{uuid.uuid4().hex}"
    ids = conversation(store, "c-erase", 0, marker)
    delivered(store, ids[0], DeliveryStatus.PENDING)
    alerted(store, "c-erase", DeliveryStatus.PENDING)
    conversation(store, "c-other", 0)

    done = lifecycle.erase(
        store, lifecycle.Target("conversation", "c-erase"), "cli:test@here", None, None
    )
    assert done.rows["events"] == 4 and done.rows["conversations"] == 1
    assert rows(store, Event, conversation_id="c-erase") == 0
    assert rows(store, ForwardDelivery) == 0 and rows(store, Alert) == 0
    assert rows(store, Event, conversation_id="c-other") == 4
    with store.session() as session:
        tombstone = session.get(Erasure, "conversation:c-erase")
    assert (tombstone.erased_by, tombstone.rows) == ("cli:test@here", sum(done.rows.values()))

    [late] = conversation_bodies("c-erase", marker)[:1]
    late["timestamp"] = "2025-07-11T07:00:00Z"
    feed(store, late)
    assert rows(store, Event, conversation_id="c-erase") == 0
    assert rows(store, Conversation, conversation_id="c-erase") == 0


def test_erasing_a_replica_takes_its_events_and_keeps_other_replicas(store: Store) -> None:
    feed(store, {"replica_id": "r-gone", "status": "error", "error_message": "bad take"})
    feed(store, {"replica_id": "r-gone-too", "status": "ready"})
    done = lifecycle.erase(store, lifecycle.Target("replica", "r-gone"), "test", None, None)
    assert (done.rows["events"], done.rows["replicas"]) == (1, 1)
    assert rows(store, Replica, replica_id="r-gone-too") == 1
    assert rows(store, Event, kind="replica") == 1
    feed(store, {"replica_id": "r-gone", "status": "ready"})
    assert rows(store, Replica, replica_id="r-gone") == 0
