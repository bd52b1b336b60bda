"""Export: the stored events as JSON Lines, one event a line, read a page at a time.

Each line holds what another deployment needs to take the event in again through its intake
(``tavus-callbacks import``): the event's id, kind, event type, source, when it was received,
its status here, and its body exactly as Tavus sent it. Pages are read by keyset on
``(received_at, id)``, each in a short transaction of its own: memory stays flat however large
the store, and a long export holds no snapshot that would keep SQLite's log from being
checkpointed or the purge from removing what it may.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, func, or_, select

from workers.store.db import Store
from workers.store.models import Event

PAGE_ROWS = 500  # events per page, and so per read transaction
# The keys of one exported line, in order.
FIELDS = ("id", "kind", "event_type", "source", "received_at", "status", "body")
_COLUMNS = (
    Event.id,
    Event.kind,
    Event.event_type,
    Event.source,
    Event.received_at,
    Event.status,
    Event.body,
)


@dataclass(frozen=True)
class Selection:
    """Which events to export: received in ``[since, until)``, of one kind, of one
    conversation; None leaves that side open."""

    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None
    conversation_id: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        conditions = []
        if self.since is not None:
            conditions.append(Event.received_at >= self.since)
        if self.until is not None:
            conditions.append(Event.received_at < self.until)
        if self.kind is not None:
            conditions.append(Event.kind == self.kind)
        if self.conversation_id is not None:
            conditions.append(Event.conversation_id == self.conversation_id)
        return conditions

    def as_detail(self) -> dict[str, str]:
        """The selection as the audit trail records it: ids and times, no content."""
        values = {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "kind": self.kind,
            "conversation": self.conversation_id,
        }
        return {key: value for key, value in values.items() if value is not None}


def count(store: Store, selection: Selection) -> int:
    with store.session() as session:
        query = select(func.count()).select_from(Event).where(*selection.where())
        return session.scalar(query) or 0


def events(store: Store, selection: Selection, page_rows: int = PAGE_ROWS) -> Iterator[dict]:
    """The selected events, oldest first, as export records (``FIELDS``)."""
    after: tuple[datetime, str] | None = None
    while True:
        query = select(*_COLUMNS).where(*selection.where())
        if after is not None:
            at, event_id = after
            query = query.where(
                or_(Event.received_at > at, and_(Event.received_at == at, Event.id > event_id))
            )
        query = query.order_by(Event.received_at, Event.id).limit(page_rows)
        with store.session() as session:
            page = session.execute(query).all()
        for row in page:
            yield record(row)
        if len(page) < page_rows:
            return
        after = (page[-1].received_at, page[-1].id)


def record(row: Any) -> dict[str, Any]:
    """One stored event as its export record."""
    return {
        "id": row.id,
        "kind": row.kind,
        "event_type": row.event_type,
        "source": row.source,
        "received_at": row.received_at.isoformat(),
        "status": row.status,
        "body": raw_body(row.body),
    }


def raw_body(stored: str) -> str:
    """The body as Tavus sent it, from the store's column: the one place export reads it (a
    store that keeps bodies encrypted decrypts them here)."""
    return stored


def line(event: dict[str, Any]) -> bytes:
    """One JSON line, newline included."""
    return orjson.dumps(event) + b"\n"
