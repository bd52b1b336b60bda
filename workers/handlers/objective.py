"""An objective completed, with its output variables (flat and nested forms load alike)."""

from workers.store import records
from workers.store.models import Objective

from .registry import HandlerContext, handles


@handles("objective")
def record_objective(ctx: HandlerContext) -> None:
    conversation_id = ctx.event.conversation_id
    ctx.records.conversation(conversation_id)
    objective = ctx.records.locked(
        Objective,
        {"output_variables": None},
        conversation_id=conversation_id,
        objective_name=ctx.data["objective_name"],
    )
    objective.output_variables = ctx.data.get("output_variables") or {}
    objective.completed_at = records.earliest(
        objective.completed_at, ctx.event.occurred_at or ctx.event.received_at
    )
