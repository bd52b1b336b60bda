"""Where the recording is, and whether Tavus managed to copy it there."""

from __future__ import annotations

from typing import Any

from schemas.callbacks.conversation import RECORDING_COPY_FAILED, RECORDING_READY
from schemas.messages import VERIFY_RECORDING
from workers.storage import state
from workers.store.models import Recording
from workers.store.records import Records, Row

from .registry import HandlerContext, handles


def recording(records: Records, conversation_id: str) -> Row:
    records.conversation(conversation_id)  # the parent row exists first
    return records.locked(Recording, {}, conversation_id=conversation_id)


def legacy_s3_uri(properties: dict[str, Any]) -> str | None:
    """Older payloads name only ``bucket_name`` and ``s3_key``."""
    if properties.get("bucket_name") and properties.get("s3_key"):
        return f"s3://{properties['bucket_name']}/{properties['s3_key']}"
    return None


@handles(RECORDING_READY)
def record_recording(ctx: HandlerContext) -> None:
    """Note where the recording is, then verify it there once this event has committed."""
    properties = ctx.properties
    row = recording(ctx.records, ctx.event.conversation_id)
    ready_at = ctx.event.occurred_at or ctx.event.received_at
    if row.ready_at is not None and ready_at < row.ready_at:
        return  # an older announcement arriving late: the newer one stands
    row.uri = properties.get("storage_uri") or legacy_s3_uri(properties)
    row.provider = properties.get("storage_provider") or (
        "s3" if properties.get("s3_key") else None
    )
    row.bucket = properties.get("bucket_name")
    row.object_key = properties.get("s3_key")
    row.duration_seconds = properties.get("duration")
    row.ready_at = ready_at
    round_ = state.start_round(row, ctx.event.id)
    ctx.then(VERIFY_RECORDING, row.conversation_id, round_)


@handles(RECORDING_COPY_FAILED)
def record_copy_failure(ctx: HandlerContext) -> None:
    properties = ctx.properties
    row = recording(ctx.records, ctx.event.conversation_id)
    row.copy_failed_at = ctx.event.occurred_at or ctx.event.received_at
    code = properties.get("error_code")
    row.copy_error_code = None if code is None else str(code)
    row.copy_error_message = properties.get("error_message")
    row.provider = row.provider or properties.get("storage_provider")
    row.uri = row.uri or properties.get("storage_uri")
