"""Getting or creating the record an event updates, safely under concurrent workers.

Two workers may handle two events of one conversation at the same time. The row is read FOR
UPDATE (PostgreSQL; SQLite's writers are already serialised by BEGIN IMMEDIATE) and, only when
missing, inserted with ON CONFLICT DO NOTHING and read again, so neither update is lost and
neither insert fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from workers.store.models import Base, Conversation

Record = TypeVar("Record", bound=Base)


def locked_record(
    session: Session, model: type[Record], defaults: dict[str, Any], **key: Any
) -> Record:
    """The row of ``model`` with primary ``key``, created from ``defaults`` if missing, locked."""
    lock = _lock_statement(model, tuple(key))
    # Most events find their record already there: read it first, insert only when missing.
    record = session.execute(lock, key).scalar_one_or_none()
    if record is not None:
        return record
    dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(model).values(**key, **defaults).on_conflict_do_nothing()
    session.execute(insert)
    return session.execute(lock, key).scalar_one()


@cache
def _lock_statement(model: type[Base], names: tuple[str, ...]) -> Select:
    """``SELECT … WHERE <key> FOR UPDATE``, built once per model and key: building a statement
    costs more than running it."""
    query = select(model).filter_by(**{name: bindparam(name) for name in names})
    return query.with_for_update().execution_options(populate_existing=True)


def conversation(session: Session, conversation_id: str) -> Conversation:
    now = datetime.now(UTC)
    return locked_record(
        session,
        Conversation,
        {"first_seen_at": now, "updated_at": now},
        conversation_id=conversation_id,
    )


def earliest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    """The same result in any order of arrival."""
    return min(v for v in (current, candidate) if v is not None) if current or candidate else None


def advance_status(
    session: Session,
    model: type[Record],
    update: dict[str, Any],
    ranks: dict[str, int],
    **key: Any,
) -> Record:
    """Apply ``update`` (a ``status``, its time ``status_at`` and other fields) to a status record
    unless the record already holds a later or more final state.

    An update wins when its rank is higher, or the rank is equal and it is at least as recent,
    so a late "queued" never overwrites "ready" and repeats change nothing.
    """
    update = {**update, "status_rank": ranks.get(update["status"], 0)}
    record = locked_record(session, model, update, **key)
    if (update["status_rank"], update["status_at"]) >= (record.status_rank, record.status_at):
        for name, value in update.items():
            setattr(record, name, value)
    return record
