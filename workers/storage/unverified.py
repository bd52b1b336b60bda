"""The alert for a recording that verification could not confirm: what happened, the likely
cause, and what to do before Daily's retention (about 30 days) ends.

One alert per conversation's recording (``cause_key``); the alerts side sends it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.messages import AlertMessage

from . import state

RETENTION = timedelta(days=30)  # Daily's default: the recording can be recovered until then

TITLES = {
    state.MISSING: "Recording not found in storage",
    state.ACCESS_DENIED: "Recording could not be read (access denied)",
    state.REFUSED: "Recording location refused",
    state.ERROR: "Recording could not be verified",
}
SEVERITIES = {
    state.MISSING: "critical",  # the recording may be lost
    state.ACCESS_DENIED: "error",  # probably there, but unchecked
    state.REFUSED: "error",
    state.ERROR: "error",
}
CAUSES = {
    state.MISSING: (
        "Tavus announced the recording, but no object (or only an empty one) appeared there "
        "within the wait window. Likely causes: Tavus's copy into your storage failed (look "
        "for an application.recording_copy_failed event: IAM trust policy mismatch, federated "
        "credential drift, bucket region typo), the recording was written under another bucket "
        "or key, or a lifecycle rule removed it."
    ),
    state.ACCESS_DENIED: (
        "The worker's own credentials may not read the object, so it could not be checked; the "
        "recording may well be there. Likely causes: the worker's identity lacks read access "
        "(S3: s3:GetObject, and s3:ListBucket, without which S3 answers 403 for a missing key; "
        "GCS: storage.objects.get; Azure: Storage Blob Data Reader), a bucket or KMS key "
        "policy denies it, or the credentials expired."
    ),
    state.REFUSED: (
        "The location was never contacted. Either it is legitimate and RECORDING_LOCATIONS "
        "does not list it yet (or the URI has a form we do not accept), or the callback did not "
        "come from your Tavus setup: a payload can never make the worker read a location that "
        "is not listed."
    ),
    state.ERROR: (
        "The check itself failed. Likely causes: the bucket or container does not exist (a name "
        "or region typo in the storage settings given to Tavus), the worker has no credentials "
        "for this provider, or the storage endpoint stayed unreachable for the whole window."
    ),
}
ACTIONS = {
    state.MISSING: (
        "Look for the object in your storage console. If it is absent, ask Tavus support to "
        "deliver the recording again from Daily"
    ),
    state.ACCESS_DENIED: (
        "Grant the worker read access, then run `tavus-callbacks verify-recording {cid}`. If "
        "the object turns out to be absent, ask Tavus support to deliver it again from Daily"
    ),
    state.REFUSED: (
        "If the location is yours, add `{entry}` to RECORDING_LOCATIONS and run "
        "`tavus-callbacks verify-recording {cid}`; otherwise treat this callback as suspect. "
        "Either way, make sure the recording is where you expect it"
    ),
    state.ERROR: (
        "Fix the cause, then run `tavus-callbacks verify-recording {cid}`. If the recording "
        "is not in your storage, ask Tavus support to deliver it again from Daily"
    ),
}


@dataclass(frozen=True)
class Subject:
    """What the alert is about: one recording, as the verification saw it."""

    conversation_id: str
    provider: str | None
    uri: str | None  # redacted
    allow_entry: str | None  # the RECORDING_LOCATIONS entry it would need, when parsable
    ready_at: datetime | None
    event_id: str | None
    attempts: int
    started_at: datetime


def cause_key(conversation_id: str) -> str:
    return f"recording_unverified:{conversation_id}"


def alert(subject: Subject, status: str, reason: str, checked_at: datetime) -> AlertMessage:
    deadline = (subject.ready_at or subject.started_at) + RETENTION
    elapsed = (checked_at - subject.started_at).total_seconds()
    where = subject.uri or "(no location)"
    action = ACTIONS[status].format(
        cid=subject.conversation_id, entry=subject.allow_entry or "<provider>:<bucket>"
    )
    text = (
        f"Conversation {subject.conversation_id}: the recording at {where} "
        f"({subject.provider or 'unknown provider'}) ended {status}: {reason.rstrip('.')}. "
        f"Checked {subject.attempts} time(s) over {elapsed:.0f} s.\n"
        f"{CAUSES[status]}\n"
        f"What to do: {action} before {deadline:%Y-%m-%d %H:%M} UTC, when Daily's 30-day "
        f"retention ends and the recording can no longer be recovered."
    )
    return AlertMessage(
        cause_key=cause_key(subject.conversation_id),
        severity=SEVERITIES[status],
        title=f"{TITLES[status]}: conversation {subject.conversation_id}",
        text=text,
        conversation_id=subject.conversation_id,
        event_id=subject.event_id,
        facts={
            "status": status,
            "reason": reason,
            "provider": subject.provider,
            "uri": subject.uri,
            "attempts": subject.attempts,
            "started_at": subject.started_at.isoformat(),
            "checked_at": checked_at.isoformat(),
            "ready_at": subject.ready_at.isoformat() if subject.ready_at else None,
            "recovery_deadline": deadline.isoformat(),
        },
    )
