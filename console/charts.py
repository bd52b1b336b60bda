"""What the console's Charts page draws, read from the store: events per minute by status over
the last 24 hours, processing latency (received to processed) by hour, and deliveries by
destination and outcome. The page (templates/charts.html) draws them as inline SVG, on the
server: no script, no build step, nothing fetched from elsewhere.

The intake's own ack latency is not in the store; it is a Prometheus histogram
(``tavus_callbacks_ack_duration_seconds``), drawn by the Grafana dashboard (deploy/grafana).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from workers.store.models import Event, ForwardDelivery

WINDOW = timedelta(hours=24)
MINUTES = int(WINDOW.total_seconds() // 60)
HOURS = int(WINDOW.total_seconds() // 3600)


@dataclass(frozen=True)
class Series:
    """One status's (or outcome's) counts, one per bucket, oldest first."""

    name: str
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)


def events_per_minute(session: Session, now: datetime) -> list[Series]:
    """Events received in each minute of the last 24 hours, one series per status seen."""
    start = _minute_floor(now) - WINDOW + timedelta(minutes=1)
    minute = _minute_of(session)
    rows = session.execute(
        select(minute, Event.status, func.count())
        .where(Event.received_at >= start)
        .group_by(minute, Event.status)
    )
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * MINUTES)
    for bucket, status, count in rows:
        index = int((_as_datetime(bucket) - start).total_seconds() // 60)
        if 0 <= index < MINUTES:
            counts[status][index] += count
    return [Series(status, counts[status]) for status in sorted(counts)]


@dataclass(frozen=True)
class Latency:
    hour: datetime  # the hour's start, UTC
    p50: float
    p95: float
    count: int


def processing_latency(session: Session, now: datetime) -> list[Latency]:
    """Seconds from receipt to processed, by hour of processing, over the last 24 hours."""
    start = now - WINDOW
    rows = session.execute(
        select(Event.received_at, Event.processed_at).where(Event.processed_at >= start)
    )
    by_hour: dict[datetime, list[float]] = defaultdict(list)
    for received_at, processed_at in rows:
        hour = processed_at.replace(minute=0, second=0, microsecond=0)
        by_hour[hour].append(max(0.0, (processed_at - received_at).total_seconds()))
    return [_latency(hour, sorted(seconds)) for hour, seconds in sorted(by_hour.items())]


def _latency(hour: datetime, seconds: list[float]) -> Latency:
    def at(share: float) -> float:
        return seconds[min(len(seconds) - 1, int(share * len(seconds)))]

    return Latency(hour, at(0.5), at(0.95), len(seconds))


@dataclass(frozen=True)
class DestinationOutcomes:
    destination: str
    by_status: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def delivered_share(self) -> float:
        return self.by_status.get("delivered", 0) / self.total if self.total else 0.0


def deliveries_by_destination(session: Session) -> list[DestinationOutcomes]:
    """Every forward delivery in the store, by destination and status."""
    rows = session.execute(
        select(ForwardDelivery.destination, ForwardDelivery.status, func.count()).group_by(
            ForwardDelivery.destination, ForwardDelivery.status
        )
    )
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for destination, status, count in rows:
        found[destination][status] = count
    return [DestinationOutcomes(name, found[name]) for name in sorted(found)]


def _minute_of(session: Session) -> ColumnElement[Any]:
    """``received_at`` truncated to its minute, in the store's own SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("minute", Event.received_at)
    return func.strftime("%Y-%m-%d %H:%M", Event.received_at)


def _as_datetime(bucket: datetime | str) -> datetime:
    if isinstance(bucket, str):  # SQLite's strftime, of a UTC time stored without its zone
        return datetime.strptime(bucket, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return bucket.astimezone(UTC) if bucket.tzinfo else bucket.replace(tzinfo=UTC)


def _minute_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)
