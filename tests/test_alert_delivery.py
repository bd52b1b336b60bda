"""Raising and delivering alerts against the real store (SQLite and PostgreSQL) and real sinks,
without Celery: once per cause, once per channel, every attempt recorded, retries bounded."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta

import pytest

from schemas.messages import AlertMessage
from schemas.settings import Settings
from tests.sinks import HttpSink
from workers import queries
from workers.alerts import delivery, ledger
from workers.store.db import Store

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def message(cause_key: str = "recording_copy_failed:c1", **changes) -> AlertMessage:
    return (
        AlertMessage(
            cause_key=cause_key,
            severity="critical",
            title="Recording copy failed for conversation c1",
            text="Tavus could not copy it.",
            conversation_id="c1",
            event_id="e-1",
            facts={"recovery_deadline": "2025-08-10T06:50:01+00:00"},
        )
        | changes
    )


@pytest.fixture
def sinks():
    slack, webhook = HttpSink().start(), HttpSink().start()
    yield slack, webhook
    slack.stop()
    webhook.stop()


def settings_for(store: Store, slack: HttpSink, webhook: HttpSink, **changes) -> Settings:
    return Settings(
        database_url=store.url,
        slack_webhook_url=slack.url + "/services/T/B/secret",
        alert_webhook_url=webhook.url + "/alerts",
        alert_webhook_secret=SECRET,
        alert_timeout_seconds=5,
        **changes,
    )


def history(store: Store, cause_key: str) -> dict[str, dict]:
    with store.session() as session:
        [row] = [a for a in queries.recent_alerts(session) if a["cause_key"] == cause_key]
    return {d["channel"]: d for d in row["deliveries"]}


def test_an_alert_is_stored_once_per_cause_and_routed_by_severity(store: Store, sinks) -> None:
    settings = settings_for(store, *sinks)  # email is not configured: not routed
    first = delivery.raise_alert(store, message(), settings)
    again = delivery.raise_alert(store, message(title="said differently"), settings)
    assert first == again == ("recording_copy_failed:c1", ["log", "slack", "webhook"])
    assert delivery.raise_alert(store, message("w", severity="warning"), settings)[1] == [
        "log",
        "slack",
        "webhook",
    ]
    assert delivery.raise_alert(store, message("i", severity="info"), settings)[1] == ["log"]
    quiet = settings.with_overrides(alert_routes=(("critical", ("webhook",)),))
    assert delivery.raise_alert(store, message("c2"), quiet)[1] == ["log", "webhook"]
    with store.session() as session:
        alerts = {a["cause_key"]: a for a in queries.recent_alerts(session)}
    assert set(alerts) == {"recording_copy_failed:c1", "w", "i", "c2"}
    assert alerts["recording_copy_failed:c1"]["title"] == message()["title"]  # the first wins


def test_each_channel_is_sent_once_however_often_asked(store: Store, sinks) -> None:
    slack, webhook = sinks
    settings = settings_for(store, slack, webhook)
    cause, channels = delivery.raise_alert(store, message(), settings)
    for _ in range(2):
        for channel in channels:
            delivery.deliver(store, cause, channel, settings)
    assert (len(slack.received), len(webhook.received)) == (1, 1)
    assert delivery.raise_alert(store, message(), settings)[1] == []  # nothing left to send
    done = history(store, cause)
    assert {c: (d["status"], d["attempts"]) for c, d in done.items()} == {
        "log": ("delivered", 1),
        "slack": ("delivered", 1),
        "webhook": ("delivered", 1),
    }


def test_transient_failures_retry_with_backoff_then_give_up(store: Store, sinks) -> None:
    slack, webhook = sinks
    slack.always = 500
    webhook.statuses = [503]
    settings = settings_for(store, slack, webhook, alert_delivery_attempts=3)
    cause, _ = delivery.raise_alert(store, message(), settings)

    outcomes = {"slack": [], "webhook": []}
    for _ in range(3):
        for channel, seen in outcomes.items():
            outcome = delivery.deliver(store, cause, channel, settings)
            seen.append((outcome.status, outcome.retry_in))
    # Attempt n waits between 2^n / 2 and 2^n seconds; a delivered or failed one stops.
    assert [s for s, _ in outcomes["webhook"]] == ["retrying", "delivered", "delivered"]
    assert 1 <= outcomes["webhook"][0][1] <= 2
    assert [s for s, _ in outcomes["slack"]] == ["retrying", "retrying", "failed"]
    assert 2 <= outcomes["slack"][1][1] <= 4 and outcomes["slack"][2][1] is None
    assert len(slack.received) == 3 and len(webhook.accepted()) == 1

    done = history(store, cause)
    assert [a["outcome"] for a in done["webhook"]["history"]] == ["retrying", "delivered"]
    assert done["webhook"]["history"][0]["error"] == "HTTP 503 from 127.0.0.1: no_service"
    assert done["slack"]["status"] == "failed"
    assert done["slack"]["last_error"] == (
        "HTTP 500 from 127.0.0.1: no_service (gave up after 3 attempts)"
    )
    assert [a["outcome"] for a in done["slack"]["history"]] == ["retrying", "retrying", "failed"]


def test_a_permanent_failure_is_not_retried(store: Store, sinks) -> None:
    slack, webhook = sinks
    slack.always = 404
    settings = settings_for(store, slack, webhook)
    cause, _ = delivery.raise_alert(store, message(), settings)
    assert delivery.deliver(store, cause, "slack", settings) == delivery.Outcome("failed")
    assert delivery.deliver(store, cause, "slack", settings) == delivery.Outcome("failed")
    assert len(slack.received) == 1
    assert history(store, cause)["slack"]["attempts"] == 1


def test_a_claim_holds_off_a_second_sender_until_its_lease_runs_out(store: Store) -> None:
    settings = Settings(database_url=store.url)
    cause, _ = delivery.raise_alert(store, message(), settings)
    now = datetime.now(UTC)
    lease = timedelta(seconds=60)
    with store.session() as session:
        first = ledger.claim(session, cause, "log", lease, now)
    with store.session() as session:
        busy = ledger.claim(session, cause, "log", lease, now + timedelta(seconds=20))
    assert isinstance(first, ledger.Claim) and first.attempt == 1
    assert busy == ledger.Busy("sending", 41.0)
    # The first worker died mid-send: once its lease is over, another may try.
    with store.session() as session:
        second = ledger.claim(session, cause, "log", lease, now + timedelta(seconds=61))
    assert isinstance(second, ledger.Claim) and second.attempt == 2
    with store.session() as session:
        ledger.finish(
            session,
            second.delivery_id,
            second.attempt,
            "delivered",
            None,
            now + timedelta(seconds=62),
        )
    with store.session() as session:
        ledger.finish(
            session,
            first.delivery_id,
            first.attempt,
            "delivered",
            None,
            now + timedelta(seconds=90),
        )  # late
        assert ledger.claim(session, cause, "log", lease, now) == ledger.Busy("delivered")
    done = history(store, cause)["log"]
    assert [a["outcome"] for a in done["history"]] == ["delivered", "delivered"]
    assert (done["status"], done["attempts"]) == ("delivered", 2)


def test_any_alert_message_is_kept_unless_it_names_no_cause(store: Store) -> None:
    settings = Settings(database_url=store.url)
    odd = message("recording_missing:c9", severity="high", title="two\nlines", facts=None)
    delivery.raise_alert(store, odd, settings)
    with store.session() as session:
        [row] = queries.recent_alerts(session, conversation_id="c1")
    assert (row["severity"], row["title"]) == ("error", "two lines")
    assert row["facts"] == {"given_severity": "high"}
    for bad in (message(cause_key=" "), ["not", "a", "message"]):
        with pytest.raises(ledger.InvalidAlert):
            delivery.raise_alert(store, bad, settings)
