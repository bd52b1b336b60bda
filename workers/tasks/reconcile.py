"""``tavus.events.reconcile``: sent by `celery beat`; pulls what callbacks never delivered."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from schemas.messages import RAISE_ALERT, RECONCILE
from workers import reconciliation
from workers.alerts.pipeline import pipeline_failure
from workers.tasks.base import StageTask, stage_task
from workers.tasks.events import publish_event, send_task
from workers.tavus_api import TavusAPI

log = logging.getLogger(__name__)


@stage_task(RECONCILE, "reconcile")
def reconcile(self: StageTask) -> dict[str, Any]:
    settings = self.settings
    if not settings.tavus_api_key:
        log.info("reconciliation skipped: TAVUS_API_KEY is not set")
        return {}

    def work() -> dict[str, Any]:
        api = TavusAPI(settings.tavus_api_url, settings.tavus_api_key)
        try:
            report = reconciliation.run(self.store, api, publish_event, settings)
        finally:
            api.close()
        log.info(
            "reconciliation: %d conversations checked, %d events fed", report.checked, report.fed
        )
        return asdict(report)

    def dead_letter(exc: BaseException, failures: int) -> dict[str, Any]:
        # No row to mark: the next run starts over; the alert says this one gave up.
        error = f"{type(exc).__name__}: {exc}"
        send_task(
            RAISE_ALERT,
            [pipeline_failure("reconcile", self.request.id or "run", error, attempts=failures)],
        )
        return {"failed": error}

    return self.guarded(self.request.id or "run", work, dead_letter)
