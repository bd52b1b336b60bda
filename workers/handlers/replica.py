"""Replica training finished: ready, or error with Tavus's message."""

from workers.store import records
from workers.store.models import Replica

from .registry import HandlerContext, handles

# Training states move forward only; the two endings outrank anything in progress.
RANKS = {"started": 0, "training": 1, "ready": 2, "error": 2}


@handles("replica")
def record_replica(ctx: HandlerContext) -> None:
    update = {
        "status": ctx.data.get("status") or "unknown",
        "status_at": ctx.event.received_at,  # training callbacks carry no time of their own
        "error_message": ctx.data.get("error_message"),
    }
    records.advance_status(ctx.records, Replica, update, RANKS, replica_id=ctx.data["replica_id"])
