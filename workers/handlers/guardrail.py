"""A guardrail triggered: one row per trigger, so the record shows the count and the times."""

from workers.store.models import GuardrailTrigger

from .registry import HandlerContext, handles


@handles("guardrail")
def record_guardrail_trigger(ctx: HandlerContext) -> None:
    ctx.records.conversation(ctx.event.conversation_id)
    ctx.records.insert_once(
        GuardrailTrigger,
        event_id=ctx.event.id,
        conversation_id=ctx.event.conversation_id,
        guardrail=ctx.properties.get("guardrail") or "unknown",
        triggered_at=ctx.event.occurred_at or ctx.event.received_at,
    )
