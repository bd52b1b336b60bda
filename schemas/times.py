"""Times: as every JSON answer, page and CLI record shows them, and as HTTP says when to retry."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def iso(value: datetime | None) -> str | None:
    """ISO 8601, or None for a time not reached yet."""
    return None if value is None else value.isoformat()


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
