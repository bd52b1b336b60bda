"""``tavus.events.purge``: sent by `celery beat` every PURGE_INTERVAL_SECONDS; removes what
RETENTION_DAYS lets go (``workers.lifecycle.purge``)."""

from __future__ import annotations

import logging

from schemas.messages import PURGE
from workers import lifecycle
from workers.tasks.base import StageTask, stage_task

log = logging.getLogger(__name__)


@stage_task(PURGE, "purge")
def purge(self: StageTask) -> dict[str, int]:
    days = self.settings.retention_days
    if not days:
        return {}  # RETENTION_DAYS=0: everything is kept

    def work() -> dict[str, int]:
        removed = lifecycle.purge(self.store, days, audit_days=self.settings.audit_retention_days)
        log.info("purge: %d rows older than %d days removed %s", sum(removed.values()), days,
                 dict(removed))  # fmt: skip
        return dict(removed)

    def dead_letter(exc: BaseException, _failures: int) -> dict[str, int]:
        # Nothing to mark: the next run starts over where this one stopped.
        log.error("purge gave up: %s", type(exc).__name__)
        return {}

    return self.guarded(self.request.id or "run", work, dead_letter)
