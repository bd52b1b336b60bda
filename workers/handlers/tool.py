"""A signed tool delivery (a post-call action, or a tool delivered by API): one row per call,
against its conversation. Nothing runs the tool here: hooks and forwarding do what it asks."""

from schemas.callbacks.tool import TOOL
from workers.store.models import ToolDelivery

from .registry import HandlerContext, handles


@handles(TOOL)
def record_tool_delivery(ctx: HandlerContext) -> None:
    conversation_id = ctx.event.conversation_id
    if conversation_id is None:  # kept as an event; no conversation record to show it in
        return
    ctx.records.conversation(conversation_id)
    ctx.records.insert_once(
        ToolDelivery,
        event_id=ctx.event.id,
        conversation_id=conversation_id,
        tool_name=ctx.data["name"],
        tool_call_id=ctx.data.get("tool_call_id"),
        arguments=ctx.data.get("arguments"),
        delivered_at=ctx.event.occurred_at or ctx.event.received_at,
    )
