"""The room shut down: when, why, and whether the reason is a failure."""

from schemas.callbacks.conversation import SHUTDOWN, shutdown_is_failure
from workers.store import records

from .registry import HandlerContext, handles


@handles(SHUTDOWN)
def record_shutdown(ctx: HandlerContext) -> None:
    convo = ctx.records.conversation(ctx.event.conversation_id)
    properties = ctx.properties
    convo.replica_id = convo.replica_id or properties.get("replica_id")
    # A shutdown with its time or reason missing still ended the call (the event's warnings say
    # what was missing): ended at arrival, reason unknown.
    ended_at = records.earliest(convo.ended_at, ctx.event.occurred_at or ctx.event.received_at)
    reason = properties.get("shutdown_reason")
    if convo.shutdown_reason is None or ended_at != convo.ended_at:
        # The first shutdown is the one that ended it; a later one changes nothing.
        convo.shutdown_reason = reason
        convo.shutdown_is_failure = shutdown_is_failure(reason) if reason else None
    convo.ended_at = ended_at
