"""``tavus.events.reconcile``: sent by `celery beat`; pulls what callbacks never delivered."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from schemas.messages import RECONCILE
from workers import reconciliation
from workers.celery_app import celery
from workers.store.db import store_for
from workers.tasks.events import publish_event
from workers.tavus_api import TavusAPI

log = logging.getLogger(__name__)


@celery.task(name=RECONCILE)
def reconcile() -> dict[str, Any]:
    settings = celery.conf.tavus_settings
    if not settings.tavus_api_key:
        log.info("reconciliation skipped: TAVUS_API_KEY is not set")
        return {}
    api = TavusAPI(settings.tavus_api_url, settings.tavus_api_key)
    try:
        report = reconciliation.run(store_for(settings.database_url), api, publish_event, settings)
    finally:
        api.close()
    log.info("reconciliation: %d conversations checked, %d events fed", report.checked, report.fed)
    return asdict(report)
