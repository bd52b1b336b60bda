"""A knowledge-base document is being processed: status and progress."""

from workers.store import records
from workers.store.models import Document

from .registry import HandlerContext, handles

RANKS = {"started": 0, "processing": 1, "ready": 2, "error": 2}


@handles("document")
def record_document(ctx: HandlerContext) -> None:
    progress = ctx.data.get("progress")
    update = {
        "status": ctx.data.get("status") or "unknown",
        # The document's own updated_at orders its updates; our arrival time stands in.
        "status_at": ctx.data.get("updated_at") or ctx.event.received_at,
        "progress": None if progress is None else str(progress),
        "error_message": ctx.data.get("error_message"),
    }
    records.advance_status(
        ctx.records, Document, update, RANKS, document_id=ctx.data["document_id"]
    )
