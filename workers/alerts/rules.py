"""Which events deserve an alert, how severe it is, and what it says.

Pure functions of the processed event: ``alert_for(event, data, policy)`` returns the
``AlertMessage`` to raise, or None. Each rule picks the alert's ``cause_key``: one alert per
cause, so a conversation whose recording copy failed twice is still one alert. Processing asks
after the event's handler succeeded, stores the alert in the event's own transaction and queues
its deliveries through the event's outbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from schemas.callbacks.conversation import (
    PERCEPTION_UNAVAILABLE,
    RECORDING_COPY_FAILED,
    SHUTDOWN,
    shutdown_is_failure,
)
from schemas.messages import AlertMessage
from schemas.settings import Settings
from workers.store.models import Event

from .notifiers import configured_channels


def _log_only(severity: str) -> tuple[str, ...]:
    return ("log",)  # the one channel that needs no setting


@dataclass(frozen=True)
class AlertPolicy:
    """The settings the rules read, and where an alert of each severity is delivered."""

    recording_retention_days: int = 30
    guardrail_alerts: bool = True
    guardrail_severity: str = "warning"
    # Severity -> the configured channels (``configured_channels``): asked only when an event
    # raises an alert, not for every event.
    channels: Callable[[str], tuple[str, ...]] = _log_only

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        return cls(
            recording_retention_days=settings.recording_retention_days,
            guardrail_alerts=settings.alert_on_guardrail,
            guardrail_severity=settings.alert_guardrail_severity,
            channels=partial(configured_channels, settings),
        )


Rule = Callable[[Event, dict[str, Any], AlertPolicy], AlertMessage | None]


def alert_for(event: Event, data: dict[str, Any], policy: AlertPolicy) -> AlertMessage | None:
    """The alert this processed event raises, if any."""
    name = event.event_type if event.kind == "conversation" else event.kind
    rule = RULES.get(name or "")
    return rule(event, data, policy) if rule else None


def _alert(
    event: Event, cause_key: str, severity: str, title: str, paragraphs: list[str], **facts: Any
) -> AlertMessage:
    return AlertMessage(
        cause_key=cause_key,
        severity=severity,
        title=title,
        text="\n\n".join(paragraphs),
        conversation_id=event.conversation_id,
        event_id=event.id,
        facts={key: value for key, value in facts.items() if value is not None},
    )


def _properties(data: dict[str, Any]) -> dict[str, Any]:
    properties = data.get("properties")
    return properties if isinstance(properties, dict) else {}


def _when(event: Event) -> datetime:
    """When it happened by Tavus's clock; our arrival time when the body carries none."""
    return event.occurred_at or event.received_at


# --- application.recording_copy_failed --------------------------------------------------------

COPY_FAILURE_CAUSES = (
    "IAM trust policy mismatch: the role or identity Tavus uses is no longer trusted, or may "
    "not write to the bucket",
    "Federated credential drift: the Workload Identity Federation provider (GCS) or the Entra "
    "ID federated credential (Azure) no longer matches what Tavus presents (issuer, subject or "
    "audience changed, or the credential was deleted)",
    "Bucket region typo: the bucket, container or region set in Tavus is not the real one",
)
ACCESS_CHECKS = {
    "s3": "the IAM role Tavus assumes: its trust policy must allow account 291871421005 with "
    "external id `tavus`, and its policy s3:PutObject on the bucket",
    "gcs": "the Workload Identity Federation pool and provider Tavus uses, and that the service "
    "account it impersonates may create objects in the bucket (roles/storage.objectCreator)",
    "azure_blob": "the Entra ID app's federated credential (issuer, subject, audience) and its "
    "Storage Blob Data Contributor role on the container",
}


def recording_copy_failed(event: Event, data: dict[str, Any], policy: AlertPolicy) -> AlertMessage:
    properties = _properties(data)
    conversation = event.conversation_id
    provider = properties.get("storage_provider")
    destination = properties.get("storage_uri")
    code = properties.get("error_code")
    message = properties.get("error_message")
    failed_at = _when(event)
    days = policy.recording_retention_days
    deadline = failed_at + timedelta(days=days)
    where = " to " + " ".join(
        part for part in (provider, f"({destination})" if destination else None) if part
    )
    access = ACCESS_CHECKS.get(provider or "", "the identity Tavus uses to write to your bucket")
    return _alert(
        event,
        f"recording_copy_failed:{conversation}",
        "critical",
        f"Recording copy failed for conversation {conversation}",
        [
            f"Tavus could not copy the recording of conversation {conversation}"
            f"{where if provider or destination else ''}, after its own retries.\n"
            f"Error: {code if code is not None else 'no code'}: {message or 'no message'}",
            "Likely causes:\n" + "\n".join(f"• {cause}" for cause in COPY_FAILURE_CAUSES),
            f"Recovery deadline: {deadline:%Y-%m-%d %H:%M} UTC. Daily keeps the recording "
            f"{days} days after the failure, then it is gone. Before then:\n"
            f"1. Check {access}.\n"
            "2. Check the bucket or container name and its region in the Tavus storage "
            "settings.\n"
            f"3. Ask Tavus support to copy the recording of conversation {conversation} again, "
            "or to hand it over, quoting this conversation id.",
        ],
        conversation_id=conversation,
        provider=provider,
        destination=destination,
        error_code=None if code is None else str(code),
        error_message=message,
        failed_at=failed_at.isoformat(),
        recovery_deadline=deadline.isoformat(),
        retention_days=days,
        likely_causes=list(COPY_FAILURE_CAUSES),
    )


# --- system.shutdown ---------------------------------------------------------------------------

SHUTDOWN_EXPLANATIONS = {
    "bot_could_not_join_meeting_it_was_probably_ended": "The replica could not join the "
    "meeting; it had probably ended before the replica arrived.",
    "daily_room_has_been_deleted": "The Daily room was deleted while the conversation ran.",
    "exception_encountered_during_conversation_startup": "Tavus hit an exception while "
    "starting the conversation.",
    "internal error": "Tavus reported an internal error.",
}


def failed_shutdown(event: Event, data: dict[str, Any], policy: AlertPolicy) -> AlertMessage | None:
    # No reason (the tolerant reader took the shutdown without one): unknown, said quietly.
    reason = _properties(data).get("shutdown_reason") or "(no shutdown_reason given)"
    verdict = shutdown_is_failure(reason)
    if verdict is False:
        return None
    conversation = event.conversation_id
    look = (
        f"Details: GET /v2/conversations/{conversation}?verbose=true, or "
        f"`tavus-callbacks conversation {conversation}`."
    )
    if verdict is None:  # Tavus adds reasons: say so quietly rather than miss a new failure
        return _alert(
            event,
            f"conversation_ended_unknown:{conversation}",
            "info",
            f"Conversation {conversation} ended for a reason not known yet: {reason}",
            [f"The shutdown reason {reason!r} is not among the documented ones.", look],
            conversation_id=conversation,
            shutdown_reason=reason,
            ended_at=_when(event).isoformat(),
        )
    stem = next(s for s in SHUTDOWN_EXPLANATIONS if reason.strip().lower().startswith(s))
    return _alert(
        event,
        f"conversation_failed:{conversation}",
        "error",
        f"Conversation {conversation} failed: {reason}",
        [
            SHUTDOWN_EXPLANATIONS[stem],
            look + " If it happens again, send Tavus support the conversation id.",
        ],
        conversation_id=conversation,
        shutdown_reason=reason,
        ended_at=_when(event).isoformat(),
    )


# --- replica training, video generation, documents ---------------------------------------------


@dataclass(frozen=True)
class ResourceFailure:
    """A resource callback whose ``status`` is ``error``: which fields say what, and what to do."""

    cause: str  # the cause key's prefix
    noun: str  # "Replica", "Video"...
    failed_to: str  # "train", "generate"...
    id_field: str
    detail_field: str  # the field with Tavus's explanation
    advice: str
    name_field: str | None = None
    more_facts: tuple[str, ...] = ()

    def __call__(
        self, event: Event, data: dict[str, Any], policy: AlertPolicy
    ) -> AlertMessage | None:
        if data.get("status") != "error":
            return None
        resource = data[self.id_field]
        name = data.get(self.name_field) if self.name_field else None
        detail = data.get(self.detail_field)
        facts = {field: data.get(field) for field in (self.id_field, self.detail_field)}
        facts |= {field: data.get(field) for field in self.more_facts}
        return _alert(
            event,
            f"{self.cause}:{resource}",
            "error",
            f"{self.noun} {resource}{f' ({name})' if name else ''} failed to {self.failed_to}",
            [
                f"Tavus could not {self.failed_to} {self.noun.lower()} {resource}: "
                f"{detail or 'no details'}",
                self.advice,
            ],
            **facts,
            failed_at=_when(event).isoformat(),
        )


replica_training_failed = ResourceFailure(
    "replica_training_failed", "Replica", "train", "replica_id", "error_message",
    "The replica cannot be used. Fix what the message names in the training video and start "
    "a new training.",
)  # fmt: skip
video_failed = ResourceFailure(
    "video_failed", "Video", "generate", "video_id", "status_details",
    "Fix what the details name (script, replica, background) and request the video again; "
    "the failed one will not complete.",
    name_field="video_name", more_facts=("video_name", "replica_id"),
)  # fmt: skip
document_failed = ResourceFailure(
    "document_failed", "Knowledge-base document", "process", "document_id", "error_message",
    "Conversations that rely on it answer without it until it is uploaded again.",
)  # fmt: skip


# --- perception, guardrails --------------------------------------------------------------------

PERCEPTION_REASONS = {
    "no_vision_history": "no video frames were captured (was the participant's camera off?)",
    "empty_summary": "the analysis came back empty",
    "summary_error": "the analysis failed",
}


def perception_unavailable(event: Event, data: dict[str, Any], policy: AlertPolicy) -> AlertMessage:
    conversation = event.conversation_id
    reason = _properties(data).get("reason") or "unknown"
    return _alert(
        event,
        f"perception_unavailable:{conversation}",
        "warning",
        f"No perception analysis for conversation {conversation}",
        [
            f"Tavus produced no perception analysis for conversation {conversation}: "
            f"{PERCEPTION_REASONS.get(reason, reason)}."
        ],
        conversation_id=conversation,
        reason=reason,
    )


def guardrail_triggered(
    event: Event, data: dict[str, Any], policy: AlertPolicy
) -> AlertMessage | None:
    if not policy.guardrail_alerts:
        return None
    conversation = event.conversation_id
    guardrail = _properties(data).get("guardrail") or "unknown"
    # Its name may say what was said, and the cause key goes where content must not (Redis, log
    # lines, which cannot be erased): the key takes a digest of it.
    named = hashlib.blake2b(str(guardrail).encode(), digest_size=8).hexdigest()
    # One alert per guardrail and conversation: a guardrail that fires ten times in one call is
    # one thing to look at, and the conversation record counts the triggers.
    return _alert(
        event,
        f"guardrail:{conversation}:{named}",
        policy.guardrail_severity,
        f"Guardrail {guardrail} triggered in conversation {conversation}",
        [
            f"The guardrail {guardrail} triggered in conversation {conversation}. Later "
            "triggers in this conversation are recorded, not alerted again: "
            f"`tavus-callbacks conversation {conversation}` counts them."
        ],
        conversation_id=conversation,
        guardrail=guardrail,
        triggered_at=_when(event).isoformat(),
    )


RULES: dict[str, Rule] = {
    RECORDING_COPY_FAILED: recording_copy_failed,
    SHUTDOWN: failed_shutdown,
    PERCEPTION_UNAVAILABLE: perception_unavailable,
    "guardrail": guardrail_triggered,
    "replica": replica_training_failed,
    "video": video_failed,
    "document": document_failed,
}
