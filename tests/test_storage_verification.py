"""The retry schedule and the wording of the alert: pure functions, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.settings import Settings
from workers import retry
from workers.storage import state, unverified
from workers.storage.verification import Claim, inspect


def test_delays_double_with_jitter_and_stay_below_half_the_visibility_timeout() -> None:
    cap = retry.cap_seconds(3600)
    for attempt, ceiling in ((1, 5), (2, 10), (3, 20), (7, 300), (30, 300)):
        delays = [retry.delay(attempt, cap, base=5) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling, attempt
        assert len(set(delays)) > 1  # jitter: redeliveries do not move in lockstep
    short = retry.cap_seconds(60)
    assert max(retry.delay(12, short, base=5) for _ in range(200)) < 30
    assert max(retry.delay(1, short, retry_after=999) for _ in range(20)) < 30


def test_no_locations_configured_means_skipped_not_refused() -> None:
    claim = Claim("c1", 1, 1, datetime.now(UTC), None, None, "s3", "s3://bucket/key")
    found = inspect(claim, Settings(recording_locations=()))
    assert (found.status, found.facts) == (state.SKIPPED, None)


@pytest.mark.parametrize("status", sorted(state.ALERTING))
def test_every_alert_says_what_why_and_by_when(status: str) -> None:
    ready = datetime(2025, 7, 11, 6, 50, tzinfo=UTC)
    subject = unverified.Subject(
        "c123456", "gcs", "gs://b/k.mp4", "gcs:b", ready, "e1", 3, ready + timedelta(seconds=5)
    )
    alert = unverified.alert(subject, status, "GCS answered 404", ready + timedelta(minutes=15))
    assert alert["cause_key"] == "recording_unverified:c123456"
    assert alert["severity"] == ("critical" if status == state.MISSING else "error")
    assert "c123456" in alert["title"]
    assert "gs://b/k.mp4" in alert["text"] and "GCS answered 404" in alert["text"]
    assert "before 2025-08-10 06:50 UTC" in alert["text"]  # event time + 30 days
    assert alert["facts"]["recovery_deadline"] == "2025-08-10T06:50:00+00:00"
