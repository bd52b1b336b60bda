"""Perception analysis (raven models): the analysis text, or why there is none."""

from schemas.callbacks.conversation import PERCEPTION_ANALYSIS, PERCEPTION_UNAVAILABLE

from .registry import HandlerContext, handles


@handles(PERCEPTION_ANALYSIS)
def record_analysis(ctx: HandlerContext) -> None:
    convo = ctx.records.conversation(ctx.event.conversation_id)
    convo.perception_analysis = ctx.properties.get("analysis")


@handles(PERCEPTION_UNAVAILABLE)
def record_unavailable(ctx: HandlerContext) -> None:
    convo = ctx.records.conversation(ctx.event.conversation_id)
    convo.perception_unavailable_reason = ctx.properties.get("reason") or "unknown"
