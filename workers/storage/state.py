"""The verification state kept on a conversation's ``Recording`` row, and how it reads as JSON.

No SDK here: the ``recording_ready`` handler starts a round, the storage task records attempts
and results, and ``queries`` shows them, all through these functions.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from schemas.times import iso
from workers.store.models import Recording

from .base import ObjectFacts

PENDING = "pending"  # a check is queued or waiting for its next try
VERIFIED = "verified"
MISSING = "missing"  # not found (or empty) when the wait window closed
ACCESS_DENIED = "access_denied"
REFUSED = "refused"  # malformed, or not in RECORDING_LOCATIONS: never asked
ERROR = "error"  # no such bucket, no credentials, or unreachable until the window closed
SKIPPED = "skipped"  # RECORDING_LOCATIONS is empty: verification is off

FINAL = frozenset({VERIFIED, MISSING, ACCESS_DENIED, REFUSED, ERROR, SKIPPED})
ALERTING = frozenset({MISSING, ACCESS_DENIED, REFUSED, ERROR})
# What the previous round found, forgotten when a new one starts (``verification_<finding>``).
_ROUND_FINDINGS = ("reason", "started_at", "checked_at", "next_at", "call_seconds", "alert")


def start_round(row: Recording, event_id: str | None) -> int:
    """A (newer) recording_ready: forget the previous result and verify again from scratch."""
    row.ready_event_id = event_id
    row.verification_round = (row.verification_round or 0) + 1
    row.verification_status = PENDING
    row.verification_attempts = 0
    for finding in _ROUND_FINDINGS:
        setattr(row, f"verification_{finding}", None)
    record_facts(row, None)
    return row.verification_round


def record_facts(row: Recording, facts: ObjectFacts | None) -> None:
    """Each fact in its ``object_<fact>`` column; None clears them all."""
    for fact in fields(ObjectFacts):
        setattr(row, f"object_{fact.name}", getattr(facts, fact.name, None))


def view(row: Recording) -> dict[str, Any] | None:
    """The ``verification`` object under a conversation's ``recording`` key."""
    if row.verification_status is None:
        return None
    started, checked = row.verification_started_at, row.verification_checked_at
    return {
        "status": row.verification_status,
        "reason": row.verification_reason,
        "attempts": row.verification_attempts,
        "started_at": iso(started),
        "checked_at": iso(checked),
        "next_attempt_at": iso(row.verification_next_at),
        "elapsed_seconds": round((checked - started).total_seconds(), 3)
        if started and checked
        else None,
        "last_call_seconds": row.verification_call_seconds,
        "size": row.object_size,
        "etag": row.object_etag,
        "checksum": row.object_checksum,
        "content_type": row.object_content_type,
        "last_modified": iso(row.object_last_modified),
        "version": row.object_version,
    }
