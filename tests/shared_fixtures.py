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

import amqp
import boto3
import pytest

from tests.helpers import FakeTavus
from tests.services import base_env, free_port, listening, wait_until
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


@pytest.fixture
def rabbit():
    """A channel on the machine's RabbitMQ, for the test to bind and read; what it made goes."""
    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    channel = connection.channel()
    made: list[str] = []
    yield channel, made
    for exchange in made:
        channel.exchange_delete(exchange)
    connection.close()


@pytest.fixture(scope="module")
def moto_sqs():
    """A private moto_server (no IAM enforced) for SQS, and the worker's AWS environment."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: listening(port), timeout=30)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def sqs(moto_sqs, monkeypatch):
    env = {
        "AWS_ENDPOINT_URL_SQS": moto_sqs,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_sqs)
