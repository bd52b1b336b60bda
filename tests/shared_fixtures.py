"""Fixtures more than one test module uses, registered in ``tests/conftest.py``."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FakeTavus
from tests.services import base_env, free_port, wait_until
from workers.store.db import Store


@pytest.fixture
def dev_server(tmp_path: Path):
    """`tavus-callbacks dev` with nothing configured: embedded Redis, SQLite, generated token."""
    env = {
        k: v
        for k, v in base_env().items()
        if k not in ("REDIS_URL", "DATABASE_URL", "CALLBACK_TOKENS")
    }
    env["PORT"] = str(free_port())
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "dev"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = wait_until(lambda: re.search(r"Callback URL: (\S+)", log.read_text()), timeout=30)[1]
        wait_until(lambda: "ready." in log.read_text(), timeout=30)
        yield {"url": url, "cwd": tmp_path, "env": env, "log": log, "process": process}
    finally:
        with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
            os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)


@pytest.fixture
def fault_db(request: pytest.FixtureRequest) -> str:
    """PostgreSQL, the production store, where it runs; SQLite elsewhere."""
    try:
        return request.getfixturevalue("postgres_url")
    except pytest.skip.Exception:
        return request.getfixturevalue("sqlite_url")


@pytest.fixture
def tavus() -> Iterator[FakeTavus]:
    fake = FakeTavus()
    server = fake.serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(name="sqlite_store")
def sqlite_store_fixture(sqlite_url: str) -> Iterator[Store]:
    """A migrated SQLite store, for the console's tests."""
    store = Store(sqlite_url)
    store.upgrade()
    yield store
    store.dispose()
