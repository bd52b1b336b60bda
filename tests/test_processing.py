"""Processing one event, without Celery: stored once, handled in one transaction, and a handler
that fails leaves nothing of its own behind but a counted attempt (on SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import select

from schemas.classify import classify
from schemas.messages import DELIVER_ALERT, AlertMessage, EventMessage, event_message
from schemas.settings import Settings
from workers import processing
from workers.alerts import delivery, rules
from workers.alerts.rules import AlertPolicy
from workers.handlers import registry
from workers.store.models import (
    Alert,
    AlertDelivery,
    Conversation,
    Event,
    EventStatus,
    GuardrailTrigger,
)

FAILING = "test.failing_handler"
BAD_WRITE = "test.bad_write"
BROKEN_RULE = "test.broken_rule"
LATE_FAILURE = "test.late_failure"


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


def guardrail_message(conversation_id: str, guardrail: str = "no_pricing") -> EventMessage:
    body = {"conversation_id": conversation_id, "properties": {"guardrail": guardrail}}
    raw = orjson.dumps(body)
    return event_message(classify(body, raw), raw, time.time(), "callback")


TWO_CHANNELS = AlertPolicy(channels=lambda severity: ("log", "webhook"))


def alert_rows(store) -> list[tuple[str, str | None, list[tuple[str, str, int]]]]:
    """(cause, event id, [(channel, status, attempts)]) per stored alert."""
    with store.session() as session:
        return [
            (alert.cause_key, alert.event_id, sorted(
                (d.channel, d.status, d.attempts)
                for d in session.scalars(select(AlertDelivery).filter_by(alert_id=alert.id))
            ))
            for alert in session.scalars(select(Alert))
        ]  # fmt: skip


def test_an_alert_is_raised_in_its_events_transaction_and_delivered_once(store) -> None:
    """The alert and its deliveries are committed with the event; only the deliveries are
    tasks; a redelivered event, or the same cause again, sends nothing a second time."""
    guardrail = guardrail_message("c-alert")
    sent: list[tuple[str, list]] = []

    def send(name: str, args: list) -> None:
        sent.append((name, args))

    outcome = processing.process(store, guardrail, send, 8, TWO_CHANNELS)
    assert (outcome.status, outcome.alert) == (EventStatus.PROCESSED, "warning")
    [(cause, event_id, deliveries)] = alert_rows(store)
    assert cause.startswith("guardrail:c-alert:") and event_id == guardrail["event_id"]
    assert deliveries == [("log", "pending", 0), ("webhook", "pending", 0)]
    assert sent == [(DELIVER_ALERT, [cause, "log"]), (DELIVER_ALERT, [cause, "webhook"])]

    # Delivered on the log; the webhook is not configured here, so that delivery fails for good.
    # The same tasks again (the outbox sent again after a crash) find their channels done.
    settings = Settings(callback_tokens=("t",), database_url=store.url)
    for _ in range(2):
        statuses = [delivery.deliver(store, cause, args[1], settings).status for _, args in sent]
        assert statuses == ["delivered", "failed"]
    again = processing.process(store, {**guardrail, "event_id": str(uuid.uuid4())}, send, 8)
    assert (again.event_id, again.alert, len(sent)) == (guardrail["event_id"], None, 2)
    # The guardrail triggers again in the same call: the same cause, nothing left to deliver.
    later = processing.process(store, guardrail_message("c-alert"), send, 8, TWO_CHANNELS)
    assert (later.status, later.alert, len(sent)) == (EventStatus.PROCESSED, "warning", 2)
    assert alert_rows(store) == [
        (cause, guardrail["event_id"], [("log", "delivered", 1), ("webhook", "failed", 1)])
    ]


@pytest.fixture
def alerting_types() -> Iterator[None]:
    """A type whose rule is broken, and one whose handler's writes fail after its alert."""

    def alert(event, data, policy) -> AlertMessage:
        return AlertMessage(
            cause_key=f"test:{event.conversation_id}", severity="error", title="t", text="x",
            conversation_id=event.conversation_id, event_id=event.id, facts={},
        )  # fmt: skip

    def broken(event, data, policy) -> None:
        raise KeyError("the rule broke")

    @registry.handles(BROKEN_RULE, LATE_FAILURE)
    def handle(ctx: registry.HandlerContext) -> None:
        if ctx.event.event_type == LATE_FAILURE:  # written by save, after the alert is stored
            ctx.records.conversation(ctx.event.conversation_id).joined_at = "not a date"

    rules.RULES.update({BROKEN_RULE: broken, LATE_FAILURE: alert})
    yield
    for name in (BROKEN_RULE, LATE_FAILURE):
        registry.HANDLERS.pop(name)
        rules.RULES.pop(name)


def test_a_broken_rule_costs_its_alert_only(store, alerting_types) -> None:
    sent: list[str] = []
    outcome = processing.process(store, message(BROKEN_RULE), lambda n, a: sent.append(n), 8)
    assert (outcome.status, outcome.alert, sent, alert_rows(store)) == ("processed", None, [], [])
    assert stored(store, outcome.event_id).last_error == "alert rules: KeyError: 'the rule broke'"


def test_an_alert_is_not_raised_when_its_event_does_not_commit(store, alerting_types) -> None:
    sent: list[str] = []
    late = message(LATE_FAILURE, "c-late")
    outcome = processing.process(store, late, lambda n, a: sent.append(n), 8)
    assert (outcome.status, outcome.alert, sent, alert_rows(store)) == ("received", None, [], [])
    registry.HANDLERS[LATE_FAILURE] = lambda ctx: None  # fixed: the retry raises it, once
    outcome = processing.process(store, late, lambda n, a: sent.append(n), 8)
    assert (outcome.status, outcome.alert, sent) == ("processed", "error", [DELIVER_ALERT])
    assert alert_rows(store) == [("test:c-late", late["event_id"], [("log", "pending", 0)])]
