"""Forwarding to webhooks against the real store (SQLite and PostgreSQL) and real HTTP sinks,
without Celery: the body byte for byte, signed as the reference library checks it, once per
(event, destination), every attempt recorded, 2xx / retry / fail as the issue says."""

from __future__ import annotations

import base64
import os
import socket
from datetime import timedelta

import orjson
import pytest
from standardwebhooks import Webhook

from cli.simulate import conversation_lifecycle
from schemas.messages import FORWARD_EVENT
from schemas.settings import ForwardDestination, Settings, SettingsError
from tests.helpers import deliver_all, stored_event
from tests.sinks import HttpSink, verified
from workers import destinations, forwarding, queries
from workers.store.db import Store
from workers.store.models import ForwardDelivery

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def settings_for(store: Store, *urls: str, events: tuple[str, ...] = ("*",), **changes) -> Settings:
    destinations = tuple(
        ForwardDestination(f"app{i}" if i else "app", url, events, {"SECRET": SECRET})
        for i, url in enumerate(urls)
    )
    values = {"database_url": store.url, "forward_destinations": destinations,
              "forward_timeout_seconds": 2.0}  # fmt: skip
    return Settings(**{**values, **changes})


def transcript_body(conversation_id: str = "c-fwd") -> dict:
    return next(
        body
        for body in conversation_lifecycle(conversation_id)
        if body.get("event_type") == "application.transcription_ready"
    )


def row(store: Store, event_id: str) -> dict:
    with store.session() as session:
        [found] = queries.list_deliveries(session, event_id=event_id)
    return found


@pytest.fixture
def sink():
    server = HttpSink().start()
    yield server
    server.stop()


def test_the_body_is_what_tavus_posted_signed_for_the_reference_library(store, sink) -> None:
    # Key order and spacing as Tavus wrote them: a re-encoded body would break their signature.
    raw = (
        b'{"event_type": "system.shutdown",  "conversation_id": "c-bytes", "properties": '
        b'{"shutdown_reason": "end_call"}, "timestamp": "2025-07-11T06:48:37.566057Z"}'
    )
    event_id, message = stored_event(store, raw)
    settings = settings_for(store, sink.url + "/tavus/webhook")
    [outcome] = deliver_all(store, settings, event_id, message)
    assert outcome.status == "delivered"
    [request] = verified(sink.received, SECRET)
    assert request.body == raw and request.path == "/tavus/webhook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == event_id
    assert request.headers["tavus-event-type"] == "system.shutdown"
    assert request.headers["tavus-event-kind"] == "conversation"
    assert request.headers["tavus-event-source"] == "callback"
    with pytest.raises(Exception):  # noqa: B017  the check fails on a single changed byte
        Webhook(SECRET).verify(raw.replace(b"end_call", b"end_cal!"), request.headers)
    assert row(store, event_id)["type"] == "webhook"  # recorded: redeliver needs no guess
    [attempt] = row(store, event_id)["history"]
    assert (attempt["outcome"], attempt["status_code"], attempt["answer"]) == (
        "delivered",
        200,
        "ok",
    )
    assert attempt["latency_ms"] >= 0


def test_once_per_event_per_destination_however_often_asked(store, sink) -> None:
    body = transcript_body()
    event_id, message = stored_event(store, body)
    settings = settings_for(store, sink.url)
    for _ in range(3):  # a redelivery, a replay, a Tavus resend
        deliver_all(store, settings, event_id, message)
    again_id, _ = stored_event(store, body)  # the same key: the same event
    assert again_id == event_id
    assert len(sink.received) == 1


def test_500_then_200_is_retried_and_delivered(store) -> None:
    sink = HttpSink(statuses=(500, 503)).start()
    try:
        event_id, message = stored_event(store, transcript_body())
        settings = settings_for(store, sink.url)
        [first] = deliver_all(store, settings, event_id, message)
        assert first.status == "retrying" and 0 < first.retry_in <= 2
        [second] = deliver_all(store, settings, event_id, message)
        assert second.status == "retrying"
        [third] = deliver_all(store, settings, event_id, message)
        assert third.status == "delivered"
        verified(sink.received, SECRET)
        assert len({r.headers["webhook-id"] for r in sink.received}) == 1  # same id each time
        found = row(store, event_id)
        assert [a["status_code"] for a in found["history"]] == [500, 503, 200]
        assert found["history"][0]["answer"] == "no_service"
        assert found["status"] == "delivered"
    finally:
        sink.stop()


def test_429_retry_after_is_honoured_below_the_visibility_cap(store) -> None:
    sink = HttpSink(statuses=(429, 429)).start()
    try:
        sink.headers["Retry-After"] = "120"
        event_id, message = stored_event(store, transcript_body())
        settings = settings_for(store, sink.url)  # visibility 900 s: cap 300 s
        [outcome] = deliver_all(store, settings, event_id, message)
        assert outcome.status == "retrying" and outcome.retry_in == 120
        short = settings.with_overrides(visibility_timeout_seconds=60)
        [outcome] = deliver_all(store, short, event_id, message)
        assert outcome.retry_in < 30  # never held in the broker past half the timeout
    finally:
        sink.stop()


@pytest.mark.parametrize("status", [410, 400, 401, 404, 302])
def test_other_4xx_and_redirects_fail_at_once(store, status) -> None:
    sink = HttpSink(always=status).start()
    sink.headers["Location"] = "http://elsewhere.example/"
    try:
        event_id, message = stored_event(store, transcript_body())
        [outcome] = deliver_all(store, settings_for(store, sink.url), event_id, message)
        assert (outcome.status, outcome.retry_in) == ("failed", None)
        assert len(sink.received) == 1  # not followed, not retried
        found = row(store, event_id)
        assert found["status"] == "failed" and f"HTTP {status}" in found["last_error"]
        assert deliver_all(store, settings_for(store, sink.url), event_id, message)[0].status == (
            "failed"
        )
        assert len(sink.received) == 1
    finally:
        sink.stop()


def test_a_destination_down_or_slow_is_retried(store) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"  # nothing listens
    slow = HttpSink(delay=3).start()
    try:
        event_id, message = stored_event(store, transcript_body())
        outcomes = deliver_all(store, settings_for(store, down, slow.url), event_id, message)
        assert [o.status for o in outcomes] == ["retrying", "retrying"]
        with store.session() as session:
            rows = queries.list_deliveries(session, event_id=event_id)
        errors = {r["destination"]: r["last_error"] for r in rows}
        assert errors == {"app": "could not connect to 127.0.0.1",
                          "app1": "no answer from 127.0.0.1 within 2s"}  # fmt: skip
    finally:
        slow.stop()


def test_retries_stop_forward_retry_hours_after_the_first_attempt(store) -> None:
    sink = HttpSink(always=503).start()
    try:
        event_id, message = stored_event(store, transcript_body())
        settings = settings_for(store, sink.url, forward_retry_hours=1)
        assert deliver_all(store, settings, event_id, message)[0].status == "retrying"
        with store.session() as session:  # the first attempt was an hour ago
            delivery = session.query(ForwardDelivery).one()
            delivery.first_attempt_at -= timedelta(hours=1)
        [outcome] = deliver_all(store, settings, event_id, message)
        assert outcome.status == "failed"
        assert "gave up after 2 attempts" in row(store, event_id)["last_error"]
    finally:
        sink.stop()


def test_events_filter_quarantine_and_sources(store, sink) -> None:
    settings = settings_for(store, sink.url, events=("application.*", "objective"))
    lifecycle = conversation_lifecycle("c-filter")
    forwarded = []
    for body in lifecycle:
        event_id, message = stored_event(store, body)
        forwarded += forwarding.tasks_for(event_id, message, message["status"], settings)
    wanted = [b for b in lifecycle if str(b.get("event_type", "")).startswith("application.")
              or "objective" in str(b.get("event_type"))]  # fmt: skip
    assert len(forwarded) == len(wanted) > 0
    assert {t["name"] for t in forwarded} == {FORWARD_EVENT}
    # A body no Tavus shape matches is quarantined, and not forwarded.
    event_id, message = stored_event(store, {"hello": "world"})
    assert message["status"] == "quarantined"
    assert (
        forwarding.tasks_for(event_id, message, "quarantined", settings_for(store, sink.url)) == []
    )
    # An unknown event type is forwarded; a reconciled one says so.
    body = {**transcript_body("c-new"), "event_type": "application.something_new"}
    event_id, message = stored_event(store, body, source="reconciled")
    assert message["status"] == "unhandled"
    deliver_all(store, settings_for(store, sink.url), event_id, message)
    assert sink.received[-1].headers["tavus-event-source"] == "reconciled"


def test_a_claim_holds_off_a_second_sender_until_its_lease_runs_out(store, sink) -> None:
    event_id, message = stored_event(store, transcript_body())
    settings = settings_for(store, sink.url)
    with store.session() as session:  # a worker claimed it, then was killed mid-attempt
        claim = forwarding._claim(session, event_id, "app", "callback", "webhook",
                                  timedelta(seconds=30), forwarding._never,
                                  forwarding._now())  # fmt: skip
    [busy] = deliver_all(store, settings, event_id, message)
    assert busy.status == "sending" and 25 < busy.retry_in <= 31
    assert sink.received == []
    with store.session() as session:
        delivery = session.get(ForwardDelivery, claim.delivery_id)
        delivery.claimed_until -= timedelta(seconds=60)
    [outcome] = deliver_all(store, settings, event_id, message)
    assert outcome.status == "delivered"
    assert [a["outcome"] for a in row(store, event_id)["history"]] == ["lost", "delivered"]


def test_a_lost_last_attempt_fails_the_delivery_instead_of_running_again(store, sink) -> None:
    event_id, _ = stored_event(store, transcript_body())
    lease = timedelta(seconds=30)
    with store.session() as session:  # the last attempt allowed, and its worker was killed
        forwarding._claim(session, event_id, "app", "callback", "webhook", lease, forwarding._never,
                          forwarding._now())  # fmt: skip
    later = forwarding._now() + 2 * lease
    with store.session() as session:
        busy = forwarding._claim(session, event_id, "app", "callback", "webhook", lease,
                                 lambda *_: True, later)  # fmt: skip
    assert busy.status == "failed"
    found = row(store, event_id)
    assert found["status"] == "failed" and "attempt 1, the last one" in found["last_error"]
    assert [a["outcome"] for a in found["history"]] == ["lost"]
    assert sink.received == []


def test_redeliver_sends_again_even_what_was_delivered(store, sink) -> None:
    event_id, message = stored_event(store, transcript_body())
    settings = settings_for(store, sink.url)
    deliver_all(store, settings, event_id, message)
    with store.session() as session:
        tasks = forwarding.redeliver(session, settings, event_id=event_id)
    assert tasks == [{"name": FORWARD_EVENT, "args": [event_id, "app", "callback"]}]
    forwarding.deliver(store, *tasks[0]["args"], settings)
    assert [r.headers["webhook-id"] for r in verified(sink.received, SECRET)] == [event_id] * 2
    assert len(row(store, event_id)["history"]) == 2


def test_destination_settings_are_checked_and_kept_secret() -> None:
    env = {
        "FORWARD_APP_URL": "https://forwarder:p%40ss-word-1@myapp.example.com/tavus?token=t0k3n",
        "FORWARD_APP_SECRET": SECRET,
        "FORWARD_APP_EVENTS": "application.transcription_ready, objective, application.*",
        "FORWARD_CRM_URL": "http://crm.internal:8080/hooks/tavus",
        "FORWARD_CRM_SECRET": SECRET,
        "FORWARD_TIMEOUT_SECONDS": "5",
        "FORWARD_RETRY_HOURS": "48",
    }
    settings = Settings.from_env(env)
    app, crm = settings.forward_destinations
    assert (app.name, crm.name, crm.events) == ("app", "crm", ("*",))
    assert app.events == ("application.transcription_ready", "objective", "application.*")
    assert (settings.forward_timeout_seconds, settings.forward_retry_hours) == (5, 48)
    assert {SECRET, "p@ss-word-1", "p%40ss-word-1"} <= set(settings.secrets())
    assert SECRET not in repr(settings) and "p%40ss" not in repr(settings)
    assert app.host == "myapp.example.com"
    destinations.check(settings)  # what the webhook type reads is right too
    for broken, variable in [
        ({"FORWARD_APP_SECRET": ""}, "FORWARD_APP_SECRET"),
        ({"FORWARD_APP_SECRET": "whsec_not*base64"}, "FORWARD_APP_SECRET"),
        ({"FORWARD_APP_SECRET": "plain-secret-0123456789"}, "FORWARD_APP_SECRET"),
        ({"FORWARD_APP_URL": "ftp://myapp.example.com/"}, "FORWARD_APP_URL"),
        ({"FORWARD_APP_URL": "https://forwarder:p%40ss@my app.example.com/"}, "FORWARD_APP_URL"),
        ({"FORWARD_APP_EVENTS": "application.*, bad pattern!"}, "FORWARD_APP_EVENTS"),
    ]:
        # What every destination has fails in from_env, what its type reads at the worker's start.
        with pytest.raises(SettingsError) as caught:
            destinations.check(Settings.from_env({**env, **broken}))
        assert variable in str(caught.value)
        assert SECRET not in str(caught.value) and "p%40ss" not in str(caught.value)


def test_errors_name_the_host_never_the_url_credentials(store) -> None:
    sink = HttpSink(always=500).start()
    try:
        url = sink.url.replace("http://", "http://user:hunter2-secret@") + "/x?token=t0k3n"
        event_id, message = stored_event(store, transcript_body())
        deliver_all(store, settings_for(store, url), event_id, message)
        text = orjson.dumps(row(store, event_id)).decode()
        assert "hunter2" not in text and "t0k3n" not in text and "127.0.0.1" in text
    finally:
        sink.stop()
