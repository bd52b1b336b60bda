"""The store's part of ``/metrics``: failed events and deliveries, the oldest pending event,
the destinations' pause states, read in one session at scrape time.

A module of its own so that ``console.metrics`` imports it (and with it SQLAlchemy and the
models) only when a scrape first reads the store: the web worker that serves callbacks never
holds them for that alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import SQLAlchemyError

from schemas.settings import Settings
from workers.store import models
from workers.store.db import store_for
from workers.store.models import DeliveryStatus, EventStatus

log = logging.getLogger(__name__)

# Failed deliveries, by ledger: one query each. Another ledger adds one pair.
FAILED_DELIVERIES: dict[str, Select[Any]] = {
    ledger: select(func.count()).select_from(rows).where(rows.status == DeliveryStatus.FAILED)
    for ledger, rows in (("alert", models.AlertDelivery), ("forward", models.ForwardDelivery))
}
_events = models.Event
FAILED_EVENTS = (
    select(func.count()).select_from(_events).where(_events.status == EventStatus.FAILED)
)
OLDEST_PENDING = select(func.min(_events.received_at)).where(_events.status == EventStatus.RECEIVED)
PAUSED = select(models.DestinationState.name, models.DestinationState.paused_at.is_not(None))


@dataclass(frozen=True)
class StoreState:
    failed_events: int
    failed_deliveries: dict[str, int]  # ledger -> count
    pending_since: datetime | None  # received_at of the oldest event not processed yet
    paused: dict[str, bool]  # destination name -> paused, for those the store knows


def read(settings: Settings) -> StoreState | None:
    """The store's state now, or None when the store cannot be read (logged)."""
    try:
        with store_for(settings.database_url, settings.cipher).session() as session:
            return StoreState(
                failed_events=session.scalar(FAILED_EVENTS) or 0,
                failed_deliveries={
                    ledger: session.scalar(query) or 0
                    for ledger, query in FAILED_DELIVERIES.items()
                },
                pending_since=session.scalar(OLDEST_PENDING),
                paused={name: paused for name, paused in session.execute(PAUSED)},
            )
    except SQLAlchemyError as exc:
        log.warning("metrics: store unreadable: %s", type(exc).__name__)
        return None
