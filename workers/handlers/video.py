"""Video generation moved on: status, progress, URLs, and the error text when it failed."""

from workers.store import records
from workers.store.models import Video

from .registry import HandlerContext, handles

RANKS = {"queued": 0, "generating": 1, "ready": 2, "error": 2, "deleted": 3}
FIELDS = (
    "status",
    "video_name",
    "status_details",
    "generation_progress",
    "download_url",
    "hosted_url",
    "stream_url",
    "replica_id",
    "created_at",
)


@handles("video")
def record_video(ctx: HandlerContext) -> None:
    update = {name: ctx.data.get(name) for name in FIELDS}
    update["status"] = update["status"] or "unknown"  # left out by the tolerant reader
    # The video's own updated_at orders its updates; our arrival time stands in without it.
    update["status_at"] = ctx.data.get("updated_at") or ctx.event.received_at
    records.advance_status(ctx.records, Video, update, RANKS, video_id=ctx.data["video_id"])
