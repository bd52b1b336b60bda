"""Times as every JSON answer, page and CLI record shows them."""

from __future__ import annotations

from datetime import datetime


def iso(value: datetime | None) -> str | None:
    """ISO 8601, or None for a time not reached yet."""
    return None if value is None else value.isoformat()
