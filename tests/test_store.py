"""The store's engine: JSON columns that take what Tavus sends, and connections that survive a
database restart without a round trip per event to check them."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from workers.store import db
from workers.store.db import Store
from workers.store.models import Conversation

if sys.platform != "win32":
    import fcntl


def test_json_columns_keep_what_orjson_alone_would_refuse(store) -> None:
    transcript = [{"role": "user", "content": "hi", "n": 2**70, "at": 1.5}, {"role": "tool"}]
    now = datetime.now(UTC)
    with store.session() as session:
        session.add(
            Conversation(
                conversation_id="c-json", transcript=transcript, first_seen_at=now, updated_at=now
            )
        )
    with store.session() as session:
        assert session.get(Conversation, "c-json").transcript == transcript


def test_a_connection_the_server_closed_is_replaced_after_idling(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(postgres_url)
    store.upgrade()
    try:
        with store.session() as session:
            session.get(Conversation, "none")  # one pooled connection, now idle
        conninfo = make_url(postgres_url).set(drivername="postgresql")
        with psycopg.connect(conninfo.render_as_string(hide_password=False)) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # as if it idled for long
        with store.session() as session:
            assert session.get(Conversation, "none") is None  # no error: a new connection
    finally:
        store.dispose()


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_sqlite_writers_take_turns_on_a_lock_the_kernel_hands_over(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    path = Path(make_url(sqlite_url).database + ".writer")

    def free() -> bool:
        with path.open("a+b") as other:  # another open file: as another process would
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    try:
        with store.session() as session:
            session.get(Conversation, "none")
            assert not free()  # held for the whole transaction
        assert free()  # and handed over as soon as it ends
        with pytest.raises(RuntimeError), store.session() as session:
            session.get(Conversation, "none")
            raise RuntimeError("rolled back")
        assert free()
    finally:
        store.dispose()
