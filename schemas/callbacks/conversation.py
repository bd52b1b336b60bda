"""Conversation callbacks: one envelope, and one properties schema per known ``event_type``.

An ``event_type`` we do not know yet is valid: its properties are kept as they came and the
worker stores the event as unhandled. Tavus adds events; rejecting them would lose data.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from marshmallow import ValidationError, fields, post_load, pre_load, validates_schema

from .. import fastload
from .base import (
    TavusDateTime,
    TavusSchema,
    optional_text,
    parse_tavus_datetime,
    required_id,
    required_text,
)

REPLICA_JOINED = "system.replica_joined"
PAL_JOINED = "system.pal_joined"
SHUTDOWN = "system.shutdown"
TRANSCRIPTION_READY = "application.transcription_ready"
RECORDING_READY = "application.recording_ready"
RECORDING_COPY_FAILED = "application.recording_copy_failed"
PERCEPTION_ANALYSIS = "application.perception_analysis"
PERCEPTION_UNAVAILABLE = "application.perception_unavailable"
POST_CALL_ACTION_EXECUTED = "application.post_call_action_executed"


class JoinedProperties(TavusSchema):
    replica_id = optional_text()
    face_id = optional_text()


class ShutdownProperties(TavusSchema):
    replica_id = optional_text()
    shutdown_reason = required_text()


class TranscriptEntry(TavusSchema):
    role = required_text()
    # Tool calls may carry no text; keep whatever came.
    content = fields.Raw(load_default=None, allow_none=True)
    timestamp = TavusDateTime(load_default=None, allow_none=True)
    seconds_from_start = fields.Float(load_default=None, allow_none=True)
    duration = fields.Float(load_default=None, allow_none=True)
    inference_id = optional_text()


class TranscriptEntries(fields.List):
    """``fields.List(fields.Nested(TranscriptEntry))``, loaded faster.

    Marshmallow takes ~15 µs an entry, over a millisecond for a long call: most of what a worker
    spends on a transcript event. Entries of the usual form (a role, numbers that are numbers, a
    date or none) load here, to what ``TranscriptEntry`` would give; a transcript with any other
    entry, or a partial load (the tolerant reader's), is left to marshmallow whole, so its errors
    and warnings are marshmallow's own.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Nested(TranscriptEntry), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        if isinstance(value, list) and not kwargs.get("partial"):
            loaded = []
            for entry in value:
                usual = _usual_entry(entry)
                if usual is None:
                    break
                loaded.append(usual)
            else:
                return loaded
        return super()._deserialize(value, attr, data, **kwargs)


def _usual_entry(entry: Any) -> dict[str, Any] | None:
    """``entry`` as ``TranscriptEntry`` loads it, or None for anything out of the usual."""
    if type(entry) is not dict or not _is_entry(entry) or "\x00" in entry["role"]:
        return None
    inference_id = entry.get("inference_id")
    if inference_id is not None and type(inference_id) is not str:
        return None
    try:
        timestamp = entry.get("timestamp")
        if timestamp is not None:
            timestamp = parse_tavus_datetime(timestamp)
        seconds_from_start = _number(entry.get("seconds_from_start"))
        duration = _number(entry.get("duration"))
    except (ValueError, TypeError, OverflowError, OSError):
        return None
    loaded = {
        "role": entry["role"],
        "content": entry.get("content"),
        "timestamp": timestamp,
        "seconds_from_start": seconds_from_start,
        "duration": duration,
        "inference_id": inference_id,
    }
    loaded.update((key, item) for key, item in entry.items() if key not in loaded)
    return loaded


def _number(value: Any) -> float | None:
    """What ``fields.Float`` loads from a JSON number (a string or a boolean is not usual)."""
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError("not a usual number")
    return float(value)


class TranscriptionProperties(TavusSchema):
    replica_id = optional_text()
    transcript = TranscriptEntries(required=True)


class TranscriptShape(fields.Field):
    """A transcript as the receiver checks it: a list of objects, each with a role.

    Loading every entry with ``TranscriptEntry`` costs about 15 µs an entry, over a millisecond
    for a long call: more than the rest of the intake together. The receiver checks the shape
    and the worker loads the entries; an entry that fails there is kept, quarantined.
    """

    default_error_messages = {  # noqa: RUF012
        "invalid": "Expected a list of transcript entries, each an object with a role."
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        if not isinstance(value, list) or not all(map(_is_entry, value)):
            raise self.make_error("invalid")
        return value


def _is_entry(entry: Any) -> bool:
    role = entry.get("role") if isinstance(entry, dict) else None
    return isinstance(role, str) and bool(role.strip())


class TranscriptionShape(TranscriptionProperties):
    transcript = TranscriptShape(required=True)


class RecordingProperties(TavusSchema):
    storage_provider = optional_text()
    storage_uri = optional_text()
    bucket_name = optional_text()  # older S3 payloads: bucket_name + s3_key, no URI
    s3_key = optional_text()
    duration = fields.Float(load_default=None, allow_none=True)

    @validates_schema
    def _has_a_location(self, data: dict[str, Any], partial: Any = None, **kwargs: Any) -> None:
        if partial:
            return  # the tolerant reader: a warning already says so; verification refuses it
        if not data.get("storage_uri") and not (data.get("bucket_name") and data.get("s3_key")):
            raise ValidationError("Needs storage_uri, or bucket_name and s3_key.")


class RecordingCopyFailedProperties(TavusSchema):
    error_code = fields.Raw(load_default=None, allow_none=True)
    error_message = optional_text()
    storage_provider = optional_text()
    storage_uri = optional_text()


class PerceptionAnalysisProperties(TavusSchema):
    analysis = fields.String(required=True)


class PerceptionUnavailableProperties(TavusSchema):
    reason = optional_text()


class PostCallActionProperties(TavusSchema):
    tool_name = optional_text()
    status = optional_text()
    request = fields.Raw(load_default=None, allow_none=True)
    response = fields.Raw(load_default=None, allow_none=True)


PROPERTIES_BY_EVENT_TYPE: dict[str, TavusSchema] = {
    REPLICA_JOINED: JoinedProperties(),
    PAL_JOINED: JoinedProperties(),
    SHUTDOWN: ShutdownProperties(),
    TRANSCRIPTION_READY: TranscriptionProperties(),
    RECORDING_READY: RecordingProperties(),
    RECORDING_COPY_FAILED: RecordingCopyFailedProperties(),
    PERCEPTION_ANALYSIS: PerceptionAnalysisProperties(),
    PERCEPTION_UNAVAILABLE: PerceptionUnavailableProperties(),
    POST_CALL_ACTION_EXECUTED: PostCallActionProperties(),
}

# Fields of a post-call action that may come beside `properties` rather than inside it.
_POST_CALL_FIELDS = ("tool_name", "status", "request", "response")


class ConversationEvent(TavusSchema):
    # Not a field: the schema that loads `properties`, by event type.
    properties_schemas: ClassVar[dict[str, TavusSchema]] = PROPERTIES_BY_EVENT_TYPE

    conversation_id = required_id()
    event_type = required_id()
    message_type = optional_text()
    timestamp = TavusDateTime(load_default=None, allow_none=True)
    webhook_url = optional_text()
    properties = fields.Dict(keys=fields.String(), load_default=dict)

    @pre_load
    def _fold_flat_post_call_action(self, data: Any, **kwargs: Any) -> Any:
        """The docs do not say whether a post-call action's fields sit under `properties`."""
        if not isinstance(data, dict) or data.get("event_type") != POST_CALL_ACTION_EXECUTED:
            return data
        flat = {key: data[key] for key in _POST_CALL_FIELDS if key in data}
        if not flat or not isinstance(data.get("properties", {}), dict):
            return data
        return {**data, "properties": {**flat, **data.get("properties", {})}}

    @post_load
    def _load_properties(
        self, data: dict[str, Any], partial: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        # ``partial``: the tolerant reader's second pass, which takes properties as they come.
        data.setdefault("properties", {})
        schema = self.properties_schemas.get(data["event_type"])
        if schema is not None:
            try:
                data["properties"] = fastload.load(schema, data["properties"], partial)
            except ValidationError as exc:
                raise ValidationError({"properties": exc.messages}) from exc
        return data


class IntakeConversationEvent(ConversationEvent):
    """What the receiver checks: everything but the transcript's entries, which the worker loads.
    A body of a known event type with a bad envelope or bad properties is still refused (422)."""

    properties_schemas: ClassVar[dict[str, TavusSchema]] = {
        **PROPERTIES_BY_EVENT_TYPE,
        TRANSCRIPTION_READY: TranscriptionShape(),
    }


# How a conversation ended, by the stem of `shutdown_reason`: the docs list each with a trailing
# " reached" that their own examples drop, and "internal error occurred at step x" varies in x.
NORMAL_SHUTDOWN_STEMS = (
    "max_call_duration",
    "participant_left_timeout",
    "participant_absent_timeout",
    "end_conversation_endpoint_hit",
)
FAILURE_SHUTDOWN_STEMS = (
    "bot_could_not_join_meeting_it_was_probably_ended",
    "daily_room_has_been_deleted",
    "exception_encountered_during_conversation_startup",
    "internal error",
)


def shutdown_is_failure(reason: str) -> bool | None:
    """True for a failure worth an alert, False for a normal ending, None for a reason not known."""
    text = reason.strip().lower()
    if text.startswith(FAILURE_SHUTDOWN_STEMS):
        return True
    if text.startswith(NORMAL_SHUTDOWN_STEMS):
        return False
    return None
