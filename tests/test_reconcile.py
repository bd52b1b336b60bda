"""Reconciliation against a local fake of ``GET /v2/conversations/{id}?verbose=true``: the only
fake in the suite, because the real Tavus API cannot run here. Everything else is real: the
store, Redis, the receiver, a Celery worker and `celery beat`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from cli.simulate import conversation_lifecycle
from schemas.classify import classify
from schemas.settings import Settings
from tests.helpers import API_KEY, TOKEN, FakeTavus, ended, worker_env
from tests.services import Beat, Worker, wait_until
from workers import queries, reconciliation
from workers.store.db import Store
from workers.store.models import Event, Recording
from workers.tavus_api import TavusAPI, retry_after

TRANSCRIPT = "application.transcription_ready"


def settings_for(store: Store, tavus: FakeTavus, **changes: Any) -> Settings:
    values = {
        "database_url": store.url,
        "tavus_api_key": API_KEY,
        "tavus_api_url": tavus.url,
        "reconcile_grace_seconds": 60,
        "reconcile_interval_seconds": 60,
        "reconcile_batch_size": 20,
    }
    return Settings(**{**values, **changes})


def run(store: Store, tavus: FakeTavus, now: datetime, **changes: Any) -> tuple:
    published: list[dict[str, Any]] = []
    api = TavusAPI(tavus.url, API_KEY)
    try:
        report = reconciliation.run(
            store, api, published.append, settings_for(store, tavus, **changes), now
        )
    finally:
        api.close()
    return report, published


NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_missed_events_are_fed_with_the_keys_their_callbacks_would_have(store, tavus) -> None:
    callbacks = conversation_lifecycle("c-missed", start=NOW - timedelta(minutes=30))
    tavus.holds("c-missed", callbacks)
    ended(store, "c-missed", NOW - timedelta(minutes=20))

    report, published = run(store, tavus, NOW)

    assert (report.checked, report.fed, report.stopped) == (1, 6, None)
    [request] = tavus.requests
    assert request["path"] == "/v2/conversations/c-missed"
    assert request["query"] == {"verbose": ["true"]}
    assert request["api_key"] == API_KEY
    assert {message["source"] for message in published} == {"reconciled"}
    # A late real callback gets the same key, so the store keeps one of the two.
    real = {body["event_type"]: body for body in callbacks if "timestamp" in body}
    for message in published:
        raw = orjson.dumps(real[message["event_type"]])
        key = classify(orjson.loads(raw), raw).event_key
        assert message["event_key"] == key
        assert message["errors"] is None


def test_only_events_the_store_lacks_are_fed(store, tavus) -> None:
    callbacks = conversation_lifecycle("c-partial", start=NOW - timedelta(minutes=30))
    tavus.holds("c-partial", callbacks)
    ended(store, "c-partial", NOW - timedelta(minutes=20))
    shutdown = next(body for body in callbacks if body.get("event_type") == "system.shutdown")
    raw = orjson.dumps(shutdown)
    with store.session() as session:
        session.add(
            Event(
                id="e-shutdown",
                event_key=classify(shutdown, raw).event_key,
                kind="conversation",
                event_type="system.shutdown",
                conversation_id="c-partial",
                received_at=NOW,
                body=raw.decode(),
                status="processed",
            )
        )

    _, published = run(store, tavus, NOW)

    assert "system.shutdown" not in {message["event_type"] for message in published}
    assert len(published) == 5


def test_complete_recent_or_unknown_conversations_are_not_pulled(store, tavus) -> None:
    ended(store, "c-recent", NOW - timedelta(seconds=30))  # inside the grace period
    ended(store, "c-complete", NOW - timedelta(hours=1), transcript=True)
    with store.session() as session:  # ...and its recording arrived too
        session.add(Recording(conversation_id="c-complete", ready_at=NOW))
    report, published = run(store, tavus, NOW)
    assert (report.checked, published, tavus.requests) == (0, [], [])


def test_a_throttled_run_stops_and_waits_as_retry_after_says(store, tavus) -> None:
    for number in range(3):
        ended(store, f"c-{number}", NOW - timedelta(hours=1, minutes=number))
        tavus.holds(f"c-{number}", conversation_lifecycle(f"c-{number}"))
    tavus.failures.append((429, {"Retry-After": "120"}))

    report, _ = run(store, tavus, NOW)
    assert (report.checked, len(tavus.requests)) == (0, 1)  # one refusal ends the run
    assert "429" in report.stopped
    held = tavus.requests[0]["path"].rsplit("/", 1)[-1]
    assert held == "c-2"  # the one that waited longest goes first

    report, _ = run(store, tavus, NOW + timedelta(seconds=60))
    pulled = {r["path"].rsplit("/", 1)[-1] for r in tavus.requests[1:]}
    assert report.checked == 2 and pulled == {"c-0", "c-1"}  # c-2 still held back

    run(store, tavus, NOW + timedelta(seconds=121))
    assert tavus.requests[-1]["path"].endswith("/c-2")


def test_server_errors_hold_back_one_period_and_runs_are_bounded(store, tavus) -> None:
    for number in range(5):
        ended(store, f"c-{number}", NOW - timedelta(hours=1, minutes=number))
        tavus.holds(f"c-{number}", conversation_lifecycle(f"c-{number}"))
    tavus.failures.append((503, {}))
    report, _ = run(store, tavus, NOW, reconcile_batch_size=2)
    assert report.checked == 0 and "503" in report.stopped
    report, _ = run(store, tavus, NOW + timedelta(seconds=1), reconcile_batch_size=2)
    assert report.checked == 2  # at most a batch per run
    report, _ = run(store, tavus, NOW + timedelta(seconds=61), reconcile_batch_size=2)
    assert report.checked == 2
    assert len(tavus.requests) == 5


def test_each_conversation_is_pulled_a_bounded_number_of_times(store, tavus) -> None:
    ended(store, "c-never", NOW - timedelta(hours=1))
    tavus.conversations["c-never"] = {"conversation_id": "c-never", "events": []}
    ended(store, "c-gone", NOW - timedelta(hours=1))  # Tavus answers 404
    now = NOW
    for _ in range(20):
        run(store, tavus, now)
        now += timedelta(hours=3)
    paths = [r["path"] for r in tavus.requests]
    assert paths.count("/v2/conversations/c-never") == reconciliation.MAX_CHECKS
    assert paths.count("/v2/conversations/c-gone") == 1


def test_a_wrong_api_key_stops_the_run(store, tavus) -> None:
    ended(store, "c-1", NOW - timedelta(hours=1))
    api = TavusAPI(tavus.url, "wrong-key")
    report = reconciliation.run(store, api, [].append, settings_for(store, tavus), NOW)
    assert report.checked == 0 and "401" in report.stopped


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("120") == 120
    assert retry_after(None) is None and retry_after("soon") is None
    later = datetime.now(UTC) + timedelta(seconds=90)
    assert 80 < retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT")) <= 90


@pytest.mark.integration
def test_a_missed_transcript_arrives_within_one_reconciliation_period(
    redis_url: str, sqlite_url: str, tavus: FakeTavus, tmp_path: Path
) -> None:
    """The issue's "done when": beat + worker + receiver, a transcript callback never sent."""
    from receiver import create_app

    store = Store(sqlite_url)
    store.upgrade()
    period = 3
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url)
    env = worker_env(
        settings,
        TAVUS_API_KEY=API_KEY,
        TAVUS_API_URL=tavus.url,
        RECONCILE_INTERVAL_SECONDS=str(period),
        RECONCILE_GRACE_SECONDS="1",
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    beat = Beat(env, tmp_path / "beat.log").start()
    try:
        client = create_app(settings).test_client()
        callbacks = conversation_lifecycle("c-lost", start=datetime.now(UTC) - timedelta(minutes=2))
        tavus.holds("c-lost", callbacks)
        delivered = [body for body in callbacks if body.get("event_type") != TRANSCRIPT]
        for body in delivered:
            assert client.post(f"/callbacks/{TOKEN}", json=body).status_code == 202

        def record() -> dict:
            with store.session() as session:
                return queries.conversation_record(session, "c-lost") or {}

        wait_until(lambda: record().get("ended_at"), timeout=20)
        due = time.monotonic() + 1  # the grace period
        wait_until(lambda: record().get("transcript"), timeout=period + 20)
        assert time.monotonic() - due < period + 10  # one period, plus processing
        events = record()["events"]
        assert len(events) == len(callbacks)
        [recovered] = [e for e in events if e["source"] == "reconciled"]
        assert (recovered["event_type"], recovered["status"]) == (TRANSCRIPT, "processed")
        assert len(record()["transcript"]) == 13

        # The real callback turns up after all: a duplicate, nothing changes.
        late = next(body for body in callbacks if body.get("event_type") == TRANSCRIPT)
        answer = client.post(f"/callbacks/{TOKEN}", json=late)
        assert answer.status_code == 202
        done = f"process[{answer.json['event_id']}] succeeded"
        wait_until(lambda: done in worker.output(), timeout=20)
        with store.session() as session:
            rows = session.scalars(select(Event).where(Event.event_type == TRANSCRIPT)).all()
        assert [row.source for row in rows] == ["reconciled"]
    finally:
        beat.stop()
        worker.stop()
        store.dispose()
    assert tavus.requests and {r["api_key"] for r in tavus.requests} == {API_KEY}
    logs = worker.output() + beat.output()
    assert "reconciliation: 1 conversations checked, 1 events fed" in logs
    assert API_KEY not in logs
