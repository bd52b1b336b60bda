"""The replica joined. Tavus sends ``system.pal_joined`` and ``system.replica_joined`` for the
same join: both land on the same fields, so the pair counts as one join in any order."""

from schemas.callbacks.conversation import PAL_JOINED, REPLICA_JOINED
from workers.store import records

from .registry import HandlerContext, handles


@handles(REPLICA_JOINED, PAL_JOINED)
def record_join(ctx: HandlerContext) -> None:
    convo = ctx.records.conversation(ctx.event.conversation_id)
    convo.replica_id = convo.replica_id or ctx.properties.get("replica_id")
    convo.joined_at = records.earliest(convo.joined_at, ctx.event.occurred_at)
