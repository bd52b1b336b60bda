"""The alert rules: which events raise an alert, how severe, and what it tells the reader."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from cli.simulate import conversation_lifecycle
from schemas.callbacks import SCHEMAS_BY_KIND
from schemas.classify import guess_kind
from tests.helpers import fixture_json
from workers.alerts.rules import COPY_FAILURE_CAUSES, AlertPolicy, alert_for
from workers.store.models import Event

RECEIVED = datetime(2025, 7, 11, 7, 0, tzinfo=UTC)


def alert(body: dict, policy: AlertPolicy | None = None):
    """The alert for ``body`` once processed, as processing asks for it."""
    kind = guess_kind(body)
    data = SCHEMAS_BY_KIND[kind].load(body)
    event = Event(
        id="e-1",
        kind=kind,
        event_type=body.get("event_type"),
        conversation_id=body.get("conversation_id"),
        received_at=RECEIVED,
        occurred_at=data.get("timestamp") or data.get("updated_at"),
    )
    return alert_for(event, data, policy or AlertPolicy())


def test_copy_failed_is_critical_with_causes_and_the_recovery_deadline() -> None:
    got = alert(fixture_json("recording_copy_failed"))
    assert got["severity"] == "critical"
    assert got["cause_key"] == "recording_copy_failed:c123456"
    assert got["title"] == "Recording copy failed for conversation c123456"
    assert (got["conversation_id"], got["event_id"]) == ("c123456", "e-1")
    text = got["text"]
    assert "to gcs (gs://my-gcs-recordings/recordings/c123456.mp4)" in text
    assert "ACCESS_DENIED: Unable to assume role: the trust policy" in text
    for cause in ("IAM trust policy mismatch", "Federated credential drift", "Bucket region typo"):
        assert f"• {cause}" in text
    # The event said 2025-07-11 06:50:01 UTC; Daily keeps the recording 30 days.
    assert "Recovery deadline: 2025-08-10 06:50 UTC" in text
    assert "Workload Identity Federation pool" in text  # the check for this provider
    assert "Ask Tavus support to copy the recording of conversation c123456 again" in text
    assert got["facts"] == {
        "conversation_id": "c123456",
        "provider": "gcs",
        "destination": "gs://my-gcs-recordings/recordings/c123456.mp4",
        "error_code": "ACCESS_DENIED",
        "error_message": "Unable to assume role: the trust policy does not allow the principal",
        "failed_at": "2025-07-11T06:50:01.100000+00:00",
        "recovery_deadline": "2025-08-10T06:50:01.100000+00:00",
        "retention_days": 30,
        "likely_causes": list(COPY_FAILURE_CAUSES),
    }


def test_copy_failed_deadline_follows_the_retention_setting_and_arrival_time() -> None:
    body = fixture_json("recording_copy_failed")
    got = alert(body, AlertPolicy(recording_retention_days=7))
    assert got["facts"]["recovery_deadline"] == "2025-07-18T06:50:01.100000+00:00"
    assert "keeps the recording 7 days" in got["text"]
    # No timestamp, no provider, no URI: the deadline counts from arrival, the text stays sane.
    bare = {k: v for k, v in body.items() if k != "timestamp"}
    bare["properties"] = {"error_code": 403}
    got = alert(bare)
    assert got["facts"]["recovery_deadline"] == "2025-08-10T07:00:00+00:00"
    assert "could not copy the recording of conversation c123456, after" in got["text"]
    assert "Error: 403: no message" in got["text"]
    assert "None" not in got["text"]


@pytest.mark.parametrize(
    ("reason", "severity"),
    [
        ("daily_room_has_been_deleted", "error"),
        ("bot_could_not_join_meeting_it_was_probably_ended", "error"),
        ("exception_encountered_during_conversation_startup", "error"),
        ("internal error occurred at step 3", "error"),
        ("participant_left_timeout reached", None),
        ("max_call_duration", None),
        ("end_conversation_endpoint_hit", None),
        ("a_reason_tavus_adds_next_year", "info"),
    ],
)
def test_shutdowns_alert_only_on_failure(reason: str, severity: str | None) -> None:
    body = fixture_json("shutdown")
    body["properties"]["shutdown_reason"] = reason
    got = alert(body)
    assert (got and got["severity"]) == severity
    if severity == "error":
        assert got["cause_key"] == "conversation_failed:<conversation_id>"
        assert reason in got["title"]


def test_replica_video_and_document_errors_alert_and_successes_do_not() -> None:
    replica = alert(fixture_json("replica_training_error"))
    assert (replica["severity"], replica["cause_key"]) == (
        "error",
        "replica_training_failed:rxxxxxxxxx",
    )
    assert "minimum duration requirement" in replica["text"]
    video = alert(fixture_json("video_error"))
    assert (video["severity"], video["cause_key"]) == ("error", "video_failed:2f5a1c9d3e")
    assert video["title"] == "Video 2f5a1c9d3e (broken) failed to generate"
    assert "The script could not be rendered." in video["text"]
    assert video["facts"]["status_details"] == "The script could not be rendered."
    document = alert(
        {"document_id": "d1", "status": "error", "error_message": "unsupported file type"}
    )
    assert document["cause_key"] == "document_failed:d1"
    assert "unsupported file type" in document["text"]
    for ok in ("replica_training_ready", "video_ready", "document_processing"):
        assert alert(fixture_json(ok)) is None


def test_perception_unavailable_is_a_warning_with_the_reason() -> None:
    got = alert(fixture_json("perception_unavailable"))
    assert (got["severity"], got["cause_key"]) == ("warning", "perception_unavailable:c123456")
    assert "no video frames were captured" in got["text"]


def test_guardrail_alerts_with_its_own_severity_and_can_be_switched_off() -> None:
    body = {"conversation_id": "c1", "properties": {"guardrail": "no_medical_advice"}}
    default = alert(body)
    # The key names the guardrail by a digest (a name may quote the conversation); the title
    # and text by its name.
    digest = hashlib.blake2b(b"no_medical_advice", digest_size=8).hexdigest()
    assert (default["severity"], default["cause_key"]) == ("warning", f"guardrail:c1:{digest}")
    assert "no_medical_advice" in default["title"]
    assert alert(body, AlertPolicy(guardrail_severity="critical"))["severity"] == "critical"
    assert alert(body, AlertPolicy(guardrail_alerts=False)) is None


def test_a_normal_conversation_raises_nothing() -> None:
    bodies = [b for b in conversation_lifecycle("c-calm") if guess_kind(b) != "guardrail"]
    assert [alert(body) for body in bodies] == [None] * len(bodies)
