"""A guardrail triggered: one row per trigger, so the record shows the count and the times."""

from workers.store.models import GuardrailTrigger

from . import records
from .registry import HandlerContext, handles


@handles("guardrail")
def record_guardrail_trigger(ctx: HandlerContext) -> None:
    records.conversation(ctx.session, ctx.event.conversation_id)
    ctx.session.merge(
        GuardrailTrigger(
            event_id=ctx.event.id,
            conversation_id=ctx.event.conversation_id,
            guardrail=ctx.properties.get("guardrail") or "unknown",
            triggered_at=ctx.event.occurred_at or ctx.event.received_at,
        )
    )
