"""The transcript is ready: keep it whole, as a list of ``{role, content, ...}`` entries."""

from typing import Any

from schemas.callbacks.conversation import TRANSCRIPTION_READY

from .registry import HandlerContext, handles


@handles(TRANSCRIPTION_READY)
def record_transcript(ctx: HandlerContext) -> None:
    convo = ctx.records.conversation(ctx.event.conversation_id)
    at = ctx.event.occurred_at or ctx.event.received_at
    if convo.transcript_at is not None and convo.transcript_at > at:
        return  # a newer transcript is already kept
    # Entries are kept as Tavus sent them (the raw body): no date was rewritten.
    sent = ctx.raw.get("properties")
    convo.transcript = _entries(sent.get("transcript") if isinstance(sent, dict) else None)
    convo.transcript_at = at
    convo.replica_id = convo.replica_id or ctx.properties.get("replica_id")


def _entries(transcript: Any) -> list[Any] | None:
    """The entries as sent; a transcript sent as one text (not the documented list) is kept as
    one entry, its role unknown (the event's warnings say so)."""
    if isinstance(transcript, list):
        return [entry for entry in transcript if isinstance(entry, dict)]
    if isinstance(transcript, str) and transcript.strip():
        return [{"role": None, "content": transcript}]
    return None
