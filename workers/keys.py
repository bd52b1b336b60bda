"""``rotate-keys``: every sealed value (and every plain one, stored before ``ENCRYPTION_KEYS``
was set) rewritten under the first key, in batches of ``BATCH_ROWS`` rows, each its own
transaction, so intake and workers never wait long on it. Once it has run, every key but the
first may be removed from ``ENCRYPTION_KEYS``.

The rows to rewrite are found by their stored text: a value sealed with the first key starts
``fernet:<its id>:`` (``schemas.crypto``), so anything else in a sealed column is not done yet.
Rewriting goes through the columns' own types (``workers/store/sealed.py``): read opened with
any key held, written sealed with the first. A value whose key is not held stops the run with
``MissingKey``, naming it; what was rewritten before stays rewritten, and a second run goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy import Column, ColumnElement, Text, and_, cast, or_, select, update

from schemas.crypto import PREFIX
from workers import lifecycle
from workers.store.db import Store
from workers.store.models import Base
from workers.store.sealed import Sealed, SealedJSON

log = logging.getLogger(__name__)

BATCH_ROWS = 500


def sealed_columns() -> dict[type[Base], list[Column]]:
    """Every model with content columns, and those columns: a new one is covered by its type."""
    found: dict[type[Base], list[Column]] = {}
    for mapper in Base.registry.mappers:
        table = mapper.class_.__table__
        columns = [c for c in table.columns if isinstance(c.type, Sealed | SealedJSON)]
        if columns:
            found[mapper.class_] = columns
    return found


def _stale(column: Column, key_id: str) -> ColumnElement[bool]:
    """The column holds a value not sealed with ``key_id``: plain, or under another key."""
    stored = cast(column, Text)  # the text as stored, never opened
    current = f"{PREFIX}{key_id}:%"
    if isinstance(column.type, SealedJSON):  # stored as a JSON string: quoted
        return and_(stored.is_not(None), stored != "null", stored.not_like(f'"{current}'))
    return and_(column.is_not(None), stored.not_like(current))


def rotate(store: Store) -> Counter[str]:
    """Rewrite every value not sealed with the first key; the rows rewritten, per table."""
    cipher = store.cipher
    if cipher is None:
        raise ValueError("ENCRYPTION_KEYS is not set: there is no key to rotate to")
    rewritten: Counter[str] = Counter()
    for model, columns in sealed_columns().items():
        (key,) = model.__table__.primary_key.columns
        stale = or_(*(_stale(column, cipher.primary) for column in columns))
        after: Any = None
        while True:
            with store.begin() as connection:
                query = select(key, *columns).where(stale).order_by(key).limit(BATCH_ROWS)
                if after is not None:
                    query = query.where(key > after)
                batch = connection.execute(query).all()
                for row in batch:
                    values = {column.name: row[i + 1] for i, column in enumerate(columns)}
                    connection.execute(update(model.__table__).where(key == row[0]).values(values))
            rewritten[model.__tablename__] += len(batch)
            if len(batch) < BATCH_ROWS:
                break
            after = batch[-1][0]
    if rewritten.total():
        lifecycle.compact(store)  # the plain search index and old pages: merged, checkpointed
    return +rewritten
