"""Processing one event, without Celery: stored once, handled in one transaction, and a handler
that fails leaves nothing of its own behind but a counted attempt (on SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from schemas.classify import classify
from schemas.messages import RAISE_ALERT, EventMessage, event_message
from workers import processing
from workers.handlers import registry
from workers.store.models import Conversation, Event, EventStatus, GuardrailTrigger

FAILING = "test.failing_handler"
BAD_WRITE = "test.bad_write"


def message(event_type: str, conversation_id: str = "c-processing") -> EventMessage:
    body = {
        "conversation_id": conversation_id,
        "event_type": event_type,
        "timestamp": "2025-07-11T06:48:37.566057Z",
        "properties": {},
    }
    raw = orjson.dumps(body)
    return event_message(classify(body, raw), raw, time.time(), "callback")


@pytest.fixture
def failing_handlers() -> Iterator[None]:
    @registry.handles(FAILING)
    def fail_after_writing(ctx: registry.HandlerContext) -> None:
        ctx.records.conversation(ctx.event.conversation_id).perception_analysis = "half done"
        raise RuntimeError("the handler broke")

    @registry.handles(BAD_WRITE)
    def write_what_the_store_refuses(ctx: registry.HandlerContext) -> None:
        # No conversation row: the foreign key fails.
        ctx.records.insert_once(
            GuardrailTrigger,
            event_id=ctx.event.id,
            conversation_id="c-missing",
            guardrail="x",
            triggered_at=ctx.event.received_at,
        )

    yield
    registry.HANDLERS.pop(FAILING)
    registry.HANDLERS.pop(BAD_WRITE)


def stored(store, event_id: str) -> Event:
    with store.session() as session:
        return session.get(Event, event_id)


def test_a_failing_handler_keeps_the_event_and_undoes_its_own_writes(
    store, failing_handlers
) -> None:
    first = message(FAILING)
    outcome = processing.process(store, first, lambda *_: None, max_attempts=2)
    assert outcome.status == EventStatus.RECEIVED and outcome.retry_in is not None
    event = stored(store, first["event_id"])
    assert (event.attempts, event.status) == (1, EventStatus.RECEIVED)
    assert event.last_error == "RuntimeError: the handler broke"
    assert event.occurred_at is not None
    with store.session() as session:
        convo = session.get(Conversation, "c-processing")
    assert convo is None  # created by the handler, so rolled back with it

    redelivered = {**first, "event_id": str(uuid.uuid4())}  # Celery's retry: same key
    outcome = processing.process(store, redelivered, lambda *_: None, max_attempts=2)
    assert (outcome.event_id, outcome.status, outcome.retry_in) == (
        first["event_id"],
        EventStatus.FAILED,
        None,
    )
    event = stored(store, first["event_id"])
    assert event.attempts == 2 and event.processed_at is not None


def test_a_write_the_store_refuses_counts_as_a_failed_attempt(store, failing_handlers) -> None:
    bad = message(BAD_WRITE)
    outcome = processing.process(store, bad, lambda *_: None, max_attempts=8)
    assert outcome.status == EventStatus.RECEIVED and outcome.retry_in is not None
    event = stored(store, bad["event_id"])
    assert event.attempts == 1 and "IntegrityError" in event.last_error


def test_a_redelivered_event_changes_nothing(store) -> None:
    joined = message("system.replica_joined", conversation_id="c-twice")
    assert processing.process(store, joined, lambda *_: None, 8).status == "processed"
    again = {**joined, "event_id": str(uuid.uuid4())}
    outcome = processing.process(store, again, lambda *_: None, 8)
    assert (outcome.event_id, outcome.status) == (joined["event_id"], "processed")
    with store.session() as session:
        assert session.query(Event).count() == 1
        assert session.get(Event, joined["event_id"]).attempts == 1
        assert session.get(Conversation, "c-twice").joined_at is not None


def test_a_retry_that_succeeds_is_processed_and_counted(store, failing_handlers) -> None:
    flaky = message(FAILING, conversation_id="c-flaky")
    assert processing.process(store, flaky, lambda *_: None, 8).status == EventStatus.RECEIVED
    registry.HANDLERS[FAILING] = lambda ctx: ctx.records.conversation("c-flaky")  # fixed
    outcome = processing.process(store, flaky, lambda *_: None, 8)
    assert (outcome.status, outcome.retry_in) == (EventStatus.PROCESSED, None)
    event = stored(store, flaky["event_id"])
    assert event.attempts == 2 and event.processed_at is not None


def test_one_attempt_allowed_fails_at_once(store, failing_handlers) -> None:
    outcome = processing.process(store, message(FAILING), lambda *_: None, max_attempts=1)
    assert (outcome.status, outcome.retry_in) == (EventStatus.FAILED, None)


def test_a_follow_up_is_sent_once_even_when_its_event_is_delivered_again(store) -> None:
    body = {"conversation_id": "c-outbox", "properties": {"guardrail": "no_pricing"}}
    raw = orjson.dumps(body)
    guardrail = event_message(classify(body, raw), raw, time.time(), "callback")
    sent: list[str] = []

    def send(name: str, args: list) -> None:
        sent.append(name)

    assert processing.process(store, guardrail, send, 8).status == EventStatus.PROCESSED
    assert sent == [RAISE_ALERT]
    # Its outbox is cleared by the next event's transaction, so a redelivery then sends nothing.
    processing.process(store, message("system.replica_joined", "c-outbox"), send, 8)
    processing.process(store, {**guardrail, "event_id": str(uuid.uuid4())}, send, 8)
    assert sent == [RAISE_ALERT]
