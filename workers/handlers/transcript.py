"""The transcript is ready: keep it whole, as a list of ``{role, content, ...}`` entries."""

from schemas.callbacks.conversation import TRANSCRIPTION_READY

from . import records
from .registry import HandlerContext, handles


@handles(TRANSCRIPTION_READY)
def record_transcript(ctx: HandlerContext) -> None:
    convo = records.conversation(ctx.session, ctx.event.conversation_id)
    at = ctx.event.occurred_at or ctx.event.received_at
    if convo.transcript_at is not None and convo.transcript_at > at:
        return  # a newer transcript is already kept
    # Entries are kept as Tavus sent them (the raw body): no date was rewritten.
    convo.transcript = ctx.raw["properties"]["transcript"]
    convo.transcript_at = at
    convo.replica_id = convo.replica_id or ctx.data["properties"].get("replica_id")
