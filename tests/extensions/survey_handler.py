"""A toy callback kind, the handler half (workers/handlers/ in the recipe): a survey names its
conversation, which is recorded as seen."""

from __future__ import annotations

from workers.handlers.registry import HandlerContext, handles


@handles("survey")
def record_survey(ctx: HandlerContext) -> None:
    conversation_id = ctx.data.get("conversation_id")
    if conversation_id:
        ctx.records.conversation(conversation_id)
