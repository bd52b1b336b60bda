"""Fixtures: a real redis-server per session, a store per test (SQLite, and PostgreSQL where it
runs), the receiver app, and a real Celery worker for integration tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from receiver import create_app
from schemas.settings import Settings
from tests.helpers import TOKEN, worker_env
from tests.services import RedisServer, Worker
from workers.store.db import Store

pytest_plugins = [
    "tests.shared_fixtures",  # the fixtures more than one test module uses
    "tests.storage_fixtures",  # moto, GCS emulator, Azurite (session-wide)
]

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# CI sets REQUIRE_POSTGRES=1: a PostgreSQL test that cannot connect fails instead of skipping.
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    admin_url = make_url(POSTGRES_URL)
    name = f"tc_{uuid.uuid4().hex[:12]}"
    conninfo = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if REQUIRE_POSTGRES:
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name).render_as_string(hide_password=False)
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on each store."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def settings(redis_url: str, sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(
        callback_tokens=(TOKEN,),
        redis_url=redis_url,
        database_url=sqlite_url,
        spool_dir=str(tmp_path / "spool"),
    )


@pytest.fixture
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def pipeline(redis_url: str, store: Store, tmp_path: Path) -> Iterator[dict]:
    """Receiver app + real Celery worker + the store, on the parametrised database."""
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=store.url)
    worker = Worker(worker_env(settings), tmp_path / "worker.log").start()
    try:
        yield {
            "client": create_app(settings).test_client(),
            "store": store,
            "settings": settings,
            "worker": worker,
        }
    finally:
        worker.stop()
