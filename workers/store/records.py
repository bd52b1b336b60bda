"""Getting or creating the record an event updates, safely under concurrent workers.

Two workers may handle two events of one conversation at the same time. The row is read FOR
UPDATE (PostgreSQL; SQLite's writers are already serialised by BEGIN IMMEDIATE) and, only when
missing, inserted with ON CONFLICT DO NOTHING (RETURNING it) and read again when another worker
inserted it first, so neither update is lost and neither insert fails.

Handlers work on rows through Core statements built once, not on ORM objects: a ``Row`` reads
like its model (``convo.replica_id``) and notes what is set, and ``Records.save`` writes each
changed row back with one UPDATE. The ORM's unit of work cost an event more than its statements.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Insert, Select, Table, Update, and_, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Base, Conversation

Record = TypeVar("Record", bound=Base)


class Row:
    """One row of ``table``, its columns as attributes; what is set to a new value is noted."""

    __slots__ = ("_changed", "_table", "_values")

    def __init__(self, table: Table, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_changed", set())

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"{self._table.name} has no column {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._values:
            raise AttributeError(f"{self._table.name} has no column {name!r}")
        if self._values[name] != value:
            self._changed.add(name)
        self._values[name] = value


class Records:
    """The rows one transaction holds: locked when read, written back together by ``save``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        self._held: dict[tuple[str, tuple[Any, ...]], Row] = {}

    def lock(self, model: type[Base], **key: Any) -> Row | None:
        """The row of ``model`` with ``key`` (primary or unique), locked; None if missing."""
        held = self._held.get((model.__tablename__, tuple(key.items())))
        if held is not None:
            return held  # read once per transaction: a second read would lose the first's changes
        table = model.__table__
        found = self.connection.execute(_lock(table, tuple(key)), key).mappings().first()
        return None if found is None else self._hold(table, key, dict(found))

    def locked(self, model: type[Base], defaults: dict[str, Any], **key: Any) -> Row:
        """The row of ``model`` with ``key``, created from ``defaults`` if missing, locked."""
        # Most events find their record already there: read it first, insert only when missing.
        row = self.lock(model, **key)
        if row is not None:
            return row
        table = model.__table__
        insert = _insert(self._dialect.dialect.name, table)
        made = self.connection.execute(insert, {**key, **defaults}).mappings().first()
        if made is None:  # another worker's insert came first: read theirs, waiting for its lock
            made = self.connection.execute(_lock(table, tuple(key)), key).mappings().one()
        return self._hold(table, key, dict(made))

    def held(self, model: type[Base], values: dict[str, Any]) -> Row:
        """A row this transaction has just inserted whole (so holds), without reading it back."""
        table = model.__table__
        key = {column.name: values[column.name] for column in table.primary_key}
        return self._hold(table, key, values)

    def insert_once(self, model: type[Base], **values: Any) -> None:
        """Insert a row unless its key is there (a repeat changes nothing)."""
        insert = _insert(self._dialect.dialect.name, model.__table__)
        self.connection.execute(insert, values)

    def conversation(self, conversation_id: str) -> Row:
        now = datetime.now(UTC)
        return self.locked(
            Conversation,
            {"first_seen_at": now, "updated_at": now},
            conversation_id=conversation_id,
        )

    def save(self) -> None:
        """One UPDATE per row with changes, of the columns that changed."""
        for row in self._held.values():
            if not row._changed:
                continue
            table, values = row._table, row._values
            params = {name: values[name] for name in row._changed}
            params.update({f"key_{c.name}": values[c.name] for c in table.primary_key})
            self.connection.execute(_update(table), params)
            row._changed.clear()

    def _hold(self, table: Table, key: dict[str, Any], values: dict[str, Any]) -> Row:
        row = Row(table, values)
        self._held[table.name, tuple(key.items())] = row
        return row


# Statements built once per table: building one costs more than running it.
@cache
def _lock(table: Table, names: tuple[str, ...]) -> Select:
    """``SELECT … WHERE <key> FOR UPDATE``."""
    return (
        select(table).where(*(table.c[name] == bindparam(name) for name in names)).with_for_update()
    )


@cache
def _insert(dialect: str, table: Table) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING *``: the new row, or nothing on a conflict."""
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    return insert.on_conflict_do_nothing().returning(*table.c)


@cache
def _update(table: Table) -> Update:
    """``UPDATE … SET <the columns passed> WHERE <primary key>``."""
    key = and_(*(column == bindparam(f"key_{column.name}") for column in table.primary_key))
    return table.update().where(key)


def locked_record(
    session: Session, model: type[Record], defaults: dict[str, Any], **key: Any
) -> Record:
    """``Records.locked`` for an ORM session, for the tasks that work on ORM objects (forwarding,
    pausing): the row of ``model`` with ``key``, created if missing, locked."""
    lock = _orm_lock(model, tuple(key))
    record = session.execute(lock, key).scalar_one_or_none()
    if record is not None:
        return record
    session.execute(_insert(session.bind.dialect.name, model.__table__), {**key, **defaults})
    return session.execute(lock, key).scalar_one()


@cache
def _orm_lock(model: type[Base], names: tuple[str, ...]) -> Select:
    query = select(model).filter_by(**{name: bindparam(name) for name in names})
    return query.with_for_update().execution_options(populate_existing=True)


def earliest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    """The same result in any order of arrival."""
    return min(v for v in (current, candidate) if v is not None) if current or candidate else None


def advance_status(
    records: Records,
    model: type[Base],
    update: dict[str, Any],
    ranks: dict[str, int],
    **key: Any,
) -> Row:
    """Apply ``update`` (a ``status``, its time ``status_at`` and other fields) to a status record
    unless the record already holds a later or more final state.

    An update wins when its rank is higher, or the rank is equal and it is at least as recent,
    so a late "queued" never overwrites "ready" and repeats change nothing.
    """
    update = {**update, "status_rank": ranks.get(update["status"], 0)}
    record = records.locked(model, update, **key)
    if (update["status_rank"], update["status_at"]) >= (record.status_rank, record.status_at):
        for name, value in update.items():
            setattr(record, name, value)
    return record
