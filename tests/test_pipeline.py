"""End to end: the real receiver, a real redis-server, a real Celery worker, a real store
(SQLite and PostgreSQL). Each test posts callbacks and then reads the store."""

from __future__ import annotations

import random

import orjson
import pytest

from cli.simulate import conversation_lifecycle, document, replica_training, video
from tests.helpers import TOKEN, fixture
from tests.services import wait_until
from workers import queries
from workers.store.models import Event

pytestmark = pytest.mark.integration

URL = f"/callbacks/{TOKEN}"


def post(client, body) -> dict:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(URL, data=data)
    assert response.status_code in (200, 202, 422), response.json
    return response.json


def settled(store, count: int) -> list[dict]:
    """Wait until ``count`` events are stored and none is still being processed."""

    def check():
        with store.session() as session:
            rows = queries.recent_events(session, limit=10_000)
        done = [row for row in rows if row["status"] != "received"]
        return rows if len(rows) == count and len(done) == count else None

    return wait_until(check, timeout=20)


def record(store, conversation_id: str) -> dict:
    with store.session() as session:
        return queries.conversation_record(session, conversation_id)


def test_documented_examples_are_stored_within_a_second(pipeline) -> None:
    names = [
        "replica_joined", "shutdown", "transcription_ready", "recording_ready_legacy_s3",
        "guardrail", "objective_flat", "replica_training_ready", "video_ready",
    ]  # fmt: skip
    ids = {post(pipeline["client"], fixture(name))["event_id"] for name in names}
    rows = settled(pipeline["store"], len(names))
    assert {row["event_id"] for row in rows} == ids
    assert {row["status"] for row in rows} == {"processed"}
    with pipeline["store"].session() as session:
        stored = {event.body for event in session.query(Event)}
    assert stored == {fixture(name).decode() for name in names}  # raw bodies, byte for byte


def test_conversation_is_the_same_in_any_order_and_with_repeats(pipeline) -> None:
    bodies = conversation_lifecycle("c-ordered")
    for body in bodies:
        post(pipeline["client"], body)
    settled(pipeline["store"], len(bodies))
    expected = record(pipeline["store"], "c-ordered")

    # Same events as the first, but sent shuffled and three times each.
    shuffled = [orjson.loads(orjson.dumps(b).replace(b"c-ordered", b"c-shuffled")) for b in bodies]
    sends = shuffled * 3
    random.Random(7).shuffle(sends)
    replies = [post(pipeline["client"], body) for body in sends]
    assert sum(reply["status"] == "duplicate" for reply in replies) == 2 * len(bodies)
    settled(pipeline["store"], 2 * len(bodies))
    got = record(pipeline["store"], "c-shuffled")

    def comparable(rec: dict) -> dict:
        """The record, less the times taken on arrival (guardrails, objectives carry none)."""
        rec = {k: v for k, v in rec.items() if k not in ("events", "conversation_id")}
        rec["guardrails"] = [{**g, "triggered_at": None} for g in rec["guardrails"]]
        rec["objectives"] = [{**o, "completed_at": None} for o in rec["objectives"]]
        # Verified by the storage task after the event, at its own time (test_storage_*.py).
        rec["recording"] = {**rec["recording"], "verification": None}
        return orjson.loads(orjson.dumps(rec).replace(b"c-shuffled", b"c-ordered"))

    assert comparable(got) == comparable(expected)
    assert got["status"] == "ended"
    assert got["replica_id"] == "r79e1c033f"
    assert got["shutdown_reason"] == "participant_left_timeout reached"
    assert len(got["transcript"]) == 13
    assert got["perception_analysis"].startswith("## Summary")
    assert got["recording"]["uri"].startswith("s3://my-tavus-recordings/recordings/c-shuffled/")
    assert got["objectives"][0]["output_variables"] == {"order_number": "4417-2290"}
    assert [(g["guardrail"], g["count"]) for g in got["guardrails"]] == [("no_medical_advice", 1)]
    assert len(got["events"]) == len(bodies)


def test_pal_joined_and_replica_joined_are_one_join(pipeline) -> None:
    post(pipeline["client"], fixture("pal_joined"))
    post(
        pipeline["client"], orjson.loads(fixture("replica_joined")) | {"conversation_id": "c123456"}
    )
    settled(pipeline["store"], 2)
    got = record(pipeline["store"], "c123456")
    assert got["joined_at"] == "2025-07-11T06:45:47.472000+00:00"
    assert got["status"] == "active"
    assert [e["event_type"] for e in got["events"]] == [
        "system.pal_joined",
        "system.replica_joined",
    ]


def test_failure_shutdown_marks_the_conversation_failed(pipeline) -> None:
    body = orjson.loads(fixture("shutdown"))
    body["properties"]["shutdown_reason"] = "daily_room_has_been_deleted"
    post(pipeline["client"], body)
    settled(pipeline["store"], 1)
    got = record(pipeline["store"], "<conversation_id>")
    assert (got["status"], got["shutdown_is_failure"]) == ("failed", True)


def test_quarantined_unhandled_and_drifted_events_are_kept(pipeline) -> None:
    bad = post(pipeline["client"], {"conversation_id": "", "event_type": "system.shutdown"})
    drifted = post(pipeline["client"], {"conversation_id": "c9", "event_type": "system.shutdown"})
    new = orjson.loads(fixture("shutdown")) | {"event_type": "application.brand_new"}
    unhandled = post(pipeline["client"], new)
    # The receiver checks less of a transcript; the worker finds the bad entry and warns.
    late = orjson.loads(fixture("transcription_ready"))
    late["properties"]["transcript"][2]["timestamp"] = "not a date"
    deep = post(pipeline["client"], late)
    assert deep["status"] == "accepted" and bad["status"] == "quarantined"
    rows = {row["event_id"]: row for row in settled(pipeline["store"], 4)}
    assert rows[bad["event_id"]]["status"] == "quarantined"
    assert "conversation_id" in rows[bad["event_id"]]["errors"]
    assert rows[drifted["event_id"]]["status"] == "processed"
    assert "properties.shutdown_reason" in rows[drifted["event_id"]]["warnings"]
    assert rows[unhandled["event_id"]]["status"] == "unhandled"
    assert rows[deep["event_id"]]["status"] == "processed"
    assert "properties.transcript.2.timestamp" in rows[deep["event_id"]]["warnings"]


def test_every_resource_kind_gets_its_record(pipeline) -> None:
    bodies = [
        replica_training("r-ok", failed=False),
        replica_training("r-bad", failed=True),
        video("v-ok", failed=False),
        video("v-bad", failed=True),
        document("d1", "started", 0),
        document("d1", "ready", 100),
        orjson.loads(fixture("perception_unavailable")),
        orjson.loads(fixture("post_call_action_executed")),
        orjson.loads(fixture("objective_nested")),
        orjson.loads(fixture("recording_copy_failed")),
    ]
    for body in bodies:
        post(pipeline["client"], body)
    settled(pipeline["store"], len(bodies))
    with pipeline["store"].session() as session:
        r_ok = queries.resource_record(session, "replica", "r-ok")
        r_bad = queries.resource_record(session, "replica", "r-bad")
        v_bad = queries.resource_record(session, "video", "v-bad")
        doc = queries.resource_record(session, "document", "d1")
        convo = queries.conversation_record(session, "c123456")
    assert r_ok["status"] == "ready" and r_bad["status"] == "error"
    assert "minimum duration" in r_bad["error_message"]
    assert v_bad["status"] == "error" and v_bad["status_details"].startswith("The script")
    assert (doc["status"], doc["progress"]) == ("ready", "100")
    assert convo["perception_unavailable_reason"] == "no_vision_history"
    assert convo["post_call_actions"][0]["response"] == {"ticket_id": 88}
    assert convo["objectives"][0]["objective_name"] == "collect_order_number"
    assert convo["recording"]["copy_error_code"] == "ACCESS_DENIED"
