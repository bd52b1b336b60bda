"""Every callback shape against the documented examples and their variants."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from schemas.callbacks import SCHEMAS_BY_KIND
from schemas.callbacks.base import parse_tavus_datetime
from schemas.callbacks.conversation import shutdown_is_failure
from schemas.classify import UnknownKind, classify
from tests.helpers import FIXTURES, fixture, fixture_json

EXPECTED = {
    "replica_joined": ("conversation", "system.replica_joined"),
    "pal_joined": ("conversation", "system.pal_joined"),
    "shutdown": ("conversation", "system.shutdown"),
    "transcription_ready": ("conversation", "application.transcription_ready"),
    "transcription_ready_timed": ("conversation", "application.transcription_ready"),
    "recording_ready_legacy_s3": ("conversation", "application.recording_ready"),
    "recording_ready_s3": ("conversation", "application.recording_ready"),
    "recording_ready_gcs": ("conversation", "application.recording_ready"),
    "recording_ready_azure": ("conversation", "application.recording_ready"),
    "recording_copy_failed": ("conversation", "application.recording_copy_failed"),
    "perception_analysis": ("conversation", "application.perception_analysis"),
    "perception_unavailable": ("conversation", "application.perception_unavailable"),
    "post_call_action_executed": ("conversation", "application.post_call_action_executed"),
    "guardrail": ("guardrail", None),
    "objective_flat": ("objective", None),
    "objective_nested": ("objective", "conversation.objective.completed"),
    "replica_training_ready": ("replica", None),
    "replica_training_error": ("replica", None),
    "video_ready": ("video", None),
    "video_error": ("video", None),
    "document_processing": ("document", None),
    "document_object": ("document", None),
    "tool_delivery_post_call": ("tool", "conversation.tool_call"),
}


def verdict_for(body: dict, hint: str | None = None):
    raw = json.dumps(body).encode()
    return classify(body, raw, hint)


def test_every_fixture_is_covered() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_classifies_and_validates(name: str) -> None:
    verdict = classify(fixture_json(name), fixture(name))
    assert (verdict.kind, verdict.event_type) == EXPECTED[name]
    assert verdict.errors is None
    assert verdict.valid


def test_dates_in_every_form_tavus_uses() -> None:
    iso = parse_tavus_datetime("2025-07-11T06:45:47.472000Z")
    video = parse_tavus_datetime("2024-08-28 15:27:40.824457")
    epoch = parse_tavus_datetime(1752216363.25)
    millis = parse_tavus_datetime(1752216363250)
    assert iso == datetime(2025, 7, 11, 6, 45, 47, 472000, tzinfo=UTC)
    assert video == datetime(2024, 8, 28, 15, 27, 40, 824457, tzinfo=UTC)
    assert epoch == millis == datetime(2025, 7, 11, 6, 46, 3, 250000, tzinfo=UTC)
    assert parse_tavus_datetime("2025-07-11T08:45:47+02:00").hour == 6
    for bad in ("yesterday", "", True, float("nan"), None, [1]):
        with pytest.raises((ValueError, OverflowError)):
            parse_tavus_datetime(bad)


def test_transcript_entries_keep_their_times_parsed() -> None:
    data = SCHEMAS_BY_KIND["conversation"].load(fixture_json("transcription_ready_timed"))
    entries = data["properties"]["transcript"]
    assert entries[0]["timestamp"] == datetime(2025, 7, 11, 6, 46, 1, tzinfo=UTC)
    assert entries[1]["timestamp"] == datetime(2025, 7, 11, 6, 46, 3, 250000, tzinfo=UTC)
    assert entries[2]["content"] is None and entries[2]["role"] == "tool"


# Each entry alone, then all of them in one transcript: usual ones, and every kind of deviation.
ENTRIES = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "timestamp": "2025-07-11T06:46:01Z", "extra": [1]},
    {"role": "tool", "seconds_from_start": 3, "duration": 1.5, "inference_id": "i-1"},
    {"role": "user", "timestamp": 1752216363250, "seconds_from_start": None},
    {"role": "user", "seconds_from_start": "2.5"},  # a numeric string: marshmallow's to load
    {"role": "user", "duration": True},
    {"role": "user", "duration": 10**400},
    {"role": "user", "timestamp": "yesterday"},
    {"role": "user", "inference_id": 7},
    {"role": " ", "content": "blank role"},
    {"role": "us\x00er"},
    {"content": "no role"},
    "a string",
    None,
]


@pytest.mark.parametrize("entries", [[entry] for entry in ENTRIES] + [ENTRIES[:4], ENTRIES])
@pytest.mark.parametrize("partial", [False, True])
def test_transcript_entries_load_as_marshmallow_loads_them(entries: list, partial: bool) -> None:
    from marshmallow import ValidationError, fields

    from schemas.callbacks.conversation import TranscriptEntries, TranscriptEntry

    def outcome(field: fields.Field) -> object:
        try:
            loaded = field.deserialize(entries, partial=partial)
        except ValidationError as exc:
            return ("refused", exc.messages)
        return [list(entry.items()) for entry in loaded]  # the same keys, in the same order

    assert outcome(TranscriptEntries()) == outcome(fields.List(fields.Nested(TranscriptEntry)))


def test_video_dates_without_zone_are_utc() -> None:
    data = SCHEMAS_BY_KIND["video"].load(fixture_json("video_ready"))
    assert data["updated_at"] == datetime(2024, 8, 28, 15, 29, 19, 802670, tzinfo=UTC)
    assert data["stream_url"].endswith(".m3u8")


def test_unknown_fields_are_kept() -> None:
    body = {**fixture_json("shutdown"), "region": "us-east-1"}
    body["properties"]["room_url"] = "https://tavus.daily.co/c123"
    data = SCHEMAS_BY_KIND["conversation"].load(body)
    assert data["region"] == "us-east-1"
    assert data["properties"]["room_url"] == "https://tavus.daily.co/c123"


def test_unknown_event_type_is_valid() -> None:
    body = {**fixture_json("replica_joined"), "event_type": "application.something_new"}
    body["properties"] = {"anything": [1, 2, 3]}
    verdict = verdict_for(body)
    assert verdict.valid
    assert (verdict.kind, verdict.event_type) == ("conversation", "application.something_new")


def test_objective_forms_load_alike() -> None:
    schema = SCHEMAS_BY_KIND["objective"]
    flat = schema.load(
        {"conversation_id": "c1", "objective_name": "o", "output_variables": {"a": "1"}}
    )
    nested = schema.load(
        {
            "conversation_id": "c1",
            "event_type": "conversation.objective.completed",
            "properties": {"objective_name": "o", "output_variables": {"a": "1"}},
        }
    )
    assert (flat["objective_name"], flat["output_variables"]) == ("o", {"a": "1"})
    assert (nested["objective_name"], nested["output_variables"]) == ("o", {"a": "1"})


def test_post_call_action_fields_beside_properties_are_folded_in() -> None:
    body = fixture_json("post_call_action_executed")
    flat = {**body, **body.pop("properties"), "properties": {}}
    data = SCHEMAS_BY_KIND["conversation"].load(flat)
    assert data["properties"]["tool_name"] == "create_ticket"
    assert data["properties"]["response"] == {"ticket_id": 88}


@pytest.mark.parametrize(
    ("body", "warning"),
    [
        (
            {"conversation_id": "c1", "event_type": "system.shutdown", "properties": {}},
            "properties.shutdown_reason",
        ),
        (
            {
                "conversation_id": "c1",
                "event_type": "application.recording_ready",
                "properties": {"storage_provider": "s3"},
            },
            "properties",
        ),
        ({"conversation_id": "c1", "event_type": "x", "timestamp": "soon"}, "timestamp"),
        ({"video_id": "v1", "status": 3}, "status"),
        ({"replica_id": "r1", "status": None}, "status"),
        ({"conversation_id": "c1", "properties": {"guardrail": ""}}, "properties.guardrail"),
    ],
)
def test_a_deviation_beside_a_tavus_identity_is_taken_with_a_warning(
    body: dict, warning: str
) -> None:
    verdict = verdict_for(body)
    assert verdict.valid, verdict.errors
    assert warning in verdict.warnings, verdict.warnings


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"conversation_id": "", "event_type": "system.replica_joined"}, "conversation_id"),
        ({"conversation_id": "c1", "event_type": ["x"]}, "event_type"),
        ({"video_id": "v" * 300, "status": "ready"}, "video_id"),
        ({"replica_id": None, "status": "ready"}, "replica_id"),
        ({"document_id": "d\x00", "status": "ready"}, "document_id"),
    ],
)
def test_a_body_whose_tavus_identity_does_not_load_is_refused(body: dict, field: str) -> None:
    verdict = verdict_for(body)
    assert not verdict.valid
    assert field in verdict.errors


def test_a_body_of_no_known_shape_is_invalid() -> None:
    verdict = verdict_for({"hello": "world"})
    assert verdict.kind is None
    assert verdict.errors == {
        "_schema": ["Not a Tavus callback: no known shape matches this body."]
    }


def test_kind_hint_overrides_the_guess() -> None:
    body = {"replica_id": "r1", "status": "ready", "video_id": "v1"}
    assert verdict_for(body).kind == "video"
    assert verdict_for(body, hint="replica").kind == "replica"
    with pytest.raises(UnknownKind):
        verdict_for(body, hint="invoice")


def test_event_keys() -> None:
    joined = verdict_for(fixture_json("replica_joined"))
    pal = verdict_for(fixture_json("pal_joined"))
    assert joined.event_key.startswith("conversation:<conversation_id>:system.replica_joined:2025")
    assert pal.event_key != joined.event_key  # two events, one join (merged by the handler)
    objective_a = verdict_for(fixture_json("objective_flat"))
    objective_b = verdict_for(fixture_json("objective_flat") | {"extra": 1})
    assert objective_a.event_key == objective_b.event_key  # one completion per objective
    ready = verdict_for(fixture_json("replica_training_ready"))
    error = verdict_for(fixture_json("replica_training_error"))
    assert ready.event_key != error.event_key
    long_id = verdict_for({"replica_id": "r" * 300, "status": "ready"})
    assert not long_id.valid and len(long_id.event_key) < 100


def test_guardrail_key_is_the_body_and_marks_a_repeat_for_a_short_window() -> None:
    body = fixture_json("guardrail")
    raw = json.dumps(body).encode()
    first, again = classify(body, raw), classify(body, raw)
    assert first.event_key == again.event_key
    assert first.repeat_window == 10
    assert classify(fixture_json("shutdown"), fixture("shutdown")).repeat_window is None


@pytest.mark.parametrize(
    ("reason", "failure"),
    [
        ("participant_left_timeout", False),
        ("participant_left_timeout reached", False),
        ("max_call_duration reached", False),
        ("end_conversation_endpoint_hit", False),
        ("daily_room_has_been_deleted", True),
        ("bot_could_not_join_meeting_it_was_probably_ended", True),
        ("exception_encountered_during_conversation_startup", True),
        ("internal error occurred at step 4", True),
        ("something_new", None),
    ],
)
def test_shutdown_reasons(reason: str, failure: bool | None) -> None:
    assert shutdown_is_failure(reason) is failure


def test_the_receiver_checks_a_transcripts_shape_and_leaves_its_entries_to_the_worker() -> None:
    body = fixture_json("transcription_ready")
    body["properties"]["transcript"][1]["timestamp"] = "not a date"
    raw = json.dumps(body).encode()
    assert classify(body, raw).valid  # the receiver: a Tavus callback, keep it
    deep = classify(body, raw, deep=True)  # the worker: this entry is wrong, the rest is taken
    assert deep.valid and "properties.transcript.1.timestamp" in deep.warnings
    for transcript in ("all of it", [{"content": "no role"}], ["a string"], None):
        body["properties"]["transcript"] = transcript
        verdict = verdict_for(body)
        assert verdict.valid and any(
            path.startswith("properties.transcript") for path in verdict.warnings
        )


def test_tool_delivery_loads_its_name_conversation_and_arguments() -> None:
    verdict = classify(fixture_json("tool_delivery_post_call"), fixture("tool_delivery_post_call"))
    assert verdict.conversation_id == "c123456"
    assert verdict.event_key == "tool:tc_01J9ZK4Q7M"
    data = SCHEMAS_BY_KIND["tool"].load(fixture_json("tool_delivery_post_call"))
    assert data["name"] == "create_crm_note"
    assert data["arguments"]["crm_account"] == "acme-42"


def test_tool_delivery_flat_form_and_arguments_that_are_no_json() -> None:
    body = {"name": "notify", "arguments": "not json", "conversation_id": "c9"}
    verdict = verdict_for(body)
    assert (verdict.kind, verdict.conversation_id, verdict.valid) == ("tool", "c9", True)
    assert SCHEMAS_BY_KIND["tool"].load(body)["arguments"] == "not json"
