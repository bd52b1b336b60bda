"""A post-call action ran: one row per action event."""

from schemas.callbacks.conversation import POST_CALL_ACTION_EXECUTED
from workers.store.models import PostCallAction

from .registry import HandlerContext, handles


@handles(POST_CALL_ACTION_EXECUTED)
def record_post_call_action(ctx: HandlerContext) -> None:
    ctx.records.conversation(ctx.event.conversation_id)
    properties = ctx.raw.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    loaded = ctx.properties
    ctx.records.insert_once(
        PostCallAction,
        event_id=ctx.event.id,
        conversation_id=ctx.event.conversation_id,
        tool_name=loaded.get("tool_name"),
        status=loaded.get("status"),
        request=properties.get("request", loaded.get("request")),
        response=properties.get("response", loaded.get("response")),
        executed_at=ctx.event.occurred_at or ctx.event.received_at,
    )
