"""Scratch stores: a SQLite file in the run's directory, or a PostgreSQL database made and dropped.

Each is migrated with the real Alembic migrations, as the Procfile's release step does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from workers.store.db import Store

from .netdelay import median_ms

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STORES = ("sqlite", "postgres")


@contextmanager
def scratch_store(kind: str, work_dir: Path, postgres_url: str) -> Iterator[str]:
    """A new, migrated, empty store of ``kind``; its URL while the block runs."""
    if kind == "sqlite":
        url = f"sqlite:///{work_dir / f'events-{uuid.uuid4().hex[:8]}.db'}"
        _migrate(url)
        yield url
        return
    admin_url = make_url(postgres_url)
    name = f"tc_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_conninfo(postgres_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            _migrate(url)
            yield url
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def postgres_reachable(postgres_url: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        psycopg.connect(_conninfo(postgres_url), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


def round_trip_ms(url: str) -> float:
    """The median time of a ``SELECT 1`` on the store at ``url``, in ms."""
    if make_url(url).get_backend_name() != "postgresql":
        return 0.0  # SQLite: a file, no round trip
    with psycopg.connect(_conninfo(url), autocommit=True, connect_timeout=5) as connection:
        return median_ms(lambda: connection.execute("SELECT 1").fetchone())


def _conninfo(url: str) -> str:
    """libpq's form of an SQLAlchemy URL (``postgresql+psycopg://``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _migrate(url: str) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines would drown the run's
    store = Store(url)
    try:
        store.upgrade()
    finally:
        store.dispose()
