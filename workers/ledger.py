"""The one claim / lease / settle path of every delivery sent outside: alert channels
(``workers.alerts.ledger``), destinations and hooks (``workers.forwarding``).

A delivery is claimed before it is sent: the claim counts the attempt and holds the row for a
lease, so a second task for the same row waits instead of sending a copy, and a worker that died
(or was stopped by a hard time limit) loses its hold when the lease runs out: its attempt is
``lost`` and the next claim makes another. Settling ends an attempt (``DeliveryStatus.settle``).
The callers lock the row first (FOR UPDATE on PostgreSQL; SQLite serialises every write).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from workers.store.models import DeliveryStatus


@dataclass(frozen=True)
class Busy:
    """Not now: ``status`` says why; ``retry_in`` when another worker holds the lease."""

    status: str
    retry_in: float | None = None


def held(delivery: Any, now: datetime) -> Busy | None:
    """Why ``delivery`` cannot be claimed now (final, or another worker's lease is live)."""
    if delivery.status in DeliveryStatus.FINAL:
        return Busy(delivery.status)
    claimed_until = delivery.claimed_until
    if delivery.status == DeliveryStatus.SENDING and claimed_until and claimed_until > now:
        return Busy(DeliveryStatus.SENDING, (claimed_until - now).total_seconds() + 1)
    return None


def was_lost(delivery: Any) -> bool:
    """Its last attempt never settled: the worker died with the lease (``held`` said None)."""
    return delivery.status == DeliveryStatus.SENDING


def begin(delivery: Any, lease: timedelta, now: datetime) -> None:
    """Count a new attempt and hold the delivery for ``lease``."""
    delivery.attempts += 1
    delivery.status = DeliveryStatus.SENDING
    delivery.claimed_until = now + lease


def give_up(delivery: Any, error: str, now: datetime) -> str:
    """Fail a delivery for good (its task was dead-lettered) unless it is final; its status."""
    if delivery.status not in DeliveryStatus.FINAL:
        DeliveryStatus.settle(delivery, DeliveryStatus.FAILED, error, now)
    return delivery.status
