"""The store's connection: one engine per process, one transaction per unit of work."""

from __future__ import annotations

import json as stdlib_json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from schemas.crypto import Cipher

from .sealed import give_cipher

if sys.platform != "win32":
    import fcntl
else:  # no flock: SQLite's own busy timeout alone keeps writers apart
    fcntl = None

MIGRATIONS = Path(__file__).with_name("migrations")


class Store:
    """Owns the engine. Build one per process: engines must not cross a fork.

    With a ``cipher`` (``Settings.cipher``, from ``ENCRYPTION_KEYS``), content columns are sealed
    as they are written and opened as they are read (``workers/store/sealed.py``).
    """

    def __init__(self, database_url: str, cipher: Cipher | None = None) -> None:
        self.url = database_url
        self.cipher = cipher
        self.engine = _engine(database_url)
        give_cipher(self.engine.dialect, cipher)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction through Core, no ORM session: the hot path of every event."""
        with self.engine.begin() as connection:
            yield connection

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (what the Procfile's release runs).

        Alembic (with Mako and Pygments, ~11 MiB) is imported here only: the processes that
        serve or work never migrate, and would otherwise hold it for nothing."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["engine"] = self.engine
        command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()


_STORES: dict[tuple[int, str, tuple[str, ...]], Store] = {}


def store_for(database_url: str, cipher: Cipher | None = None) -> Store:
    """The process's store for this URL (and keys), made on first use (after any fork)."""
    key = (os.getpid(), database_url, cipher.ids if cipher is not None else ())
    if key not in _STORES:
        _STORES[key] = Store(database_url, cipher)
    return _STORES[key]


def _engine(database_url: str) -> Engine:
    url = make_url(database_url)
    json = {"json_serializer": _json_dumps, "json_deserializer": _json_loads}
    if url.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_size=5, max_overflow=5, **json)
        event.listen(engine, "checkin", _note_idle_since)
        event.listen(engine, "checkout", _ping_if_idle)
        return engine
    engine = create_engine(url, connect_args={"timeout": 30}, **json)
    event.listen(engine, "connect", _sqlite_on_connect)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        writers = WriterQueue(Path(url.database).with_name(Path(url.database).name + ".writer"))
        event.listen(engine, "begin", writers.begin_immediate)
        event.listen(engine, "checkin", writers.release)
    else:
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


# A connection that sat in the pool this long is pinged before use: a database restart or a
# proxy's idle timeout may have closed it. A busy worker's connections skip the round trip that
# pool_pre_ping would add to every event.
PING_AFTER_IDLE_SECONDS = 10.0


def _note_idle_since(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dbapi_connection.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as error:  # any failure: let the pool replace the connection
        raise DisconnectionError(f"stale connection: {error}") from error


def _json_dumps(value: Any) -> str:
    """JSON columns through orjson (a transcript is tens of KB); ``json`` for what orjson
    refuses, such as integers beyond 64 bits."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return stdlib_json.dumps(value)


def _json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return stdlib_json.loads(text)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, decide when a transaction begins (see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
    # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a commit survives a crash
    # of the process (the worker acks after it), and only an OS crash or power cut can undo the
    # last ones. FULL would cost an fsync per event.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Freed space is zeroed: an erased or purged row (or an old version of an updated one) must
    # not stay readable in the file's free pages (docs/privacy.md).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock when the transaction starts: two worker processes that both read a
    # conversation and then write it would otherwise deadlock, and SQLite fails one at once.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class WriterQueue:
    """Writers to one SQLite file take turns on an ``flock`` before ``BEGIN IMMEDIATE``.

    SQLite lets one writer in at a time, and a writer that finds the file locked polls it,
    sleeping 1, 2, 5, 10... ms in between: two worker processes that both write all the time
    spend more time asleep than writing, and two do less than one. The kernel wakes a process
    waiting on ``flock`` the moment the lock is free. Writers that do not take it (another
    program) still meet SQLite's own lock and its busy timeout: this only saves the sleeps.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[int, Any] = {}  # per process: a lock file must not cross a fork

    def begin_immediate(self, connection: Any) -> None:
        if fcntl is not None:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        _sqlite_begin_immediate(connection)

    def release(self, _dbapi_connection: Any, _record: Any) -> None:
        """A connection is back in the pool (or thrown away): its transaction has ended."""
        handle = self._files.get(os.getpid())
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)  # unlocking an unlocked file is harmless

    def _file(self) -> Any:
        pid = os.getpid()
        if pid not in self._files:
            self._files[pid] = self.path.open("a+b")
        return self._files[pid]
