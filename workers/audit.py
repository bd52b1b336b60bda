"""The audit trail: every action that changes state or reveals content, recorded with its time,
actor, action, target and outcome. Entries are only inserted; the purge removes those older
than AUDIT_RETENTION_DAYS. Nothing here takes payload content: ids, names and counts only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from workers.store.db import Store
from workers.store.models import AuditEntry


def record(
    store: Store,
    actor: str,
    action: str,
    target: str | None = None,
    outcome: str = "done",
    **detail: Any,
) -> None:
    """Add one entry, in a transaction of its own (an action that failed is recorded too)."""
    values = {
        "at": datetime.now(UTC),
        "actor": actor[:255],
        "action": action,
        "target": None if target is None else target[:300],
        "outcome": outcome,
        "detail": detail or None,
    }
    with store.begin() as connection:
        connection.execute(insert(AuditEntry).values(values))


def entries(session: Session, since: datetime | None = None, limit: int = 100) -> list[dict]:
    """The newest entries first (since ``since``), as JSON-ready records."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    return [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "outcome": e.outcome,
            "detail": e.detail or {},
        }
        for e in session.scalars(query)
    ]
