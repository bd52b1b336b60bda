"""Secrets stay out of logs; only allowed networks may post, judged by the right X-Forwarded-For
entry; the service refuses to start unguarded."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis
import requests

from receiver import create_app
from receiver.sources import client_address
from schemas.redaction import RedactingFilter, redact
from schemas.settings import Settings, SettingsError
from tests.helpers import TOKEN, exchange, fixture, request_head
from tests.services import RedisServer, Web, base_env

URL = f"/callbacks/{TOKEN}"


def test_redact_removes_tokens_paths_and_url_passwords() -> None:
    text = (
        f"POST /callbacks/{TOKEN}?kind=video failed; retry "
        "redis://user:hunter2-password@redis.example.com:6379/0 and token again: " + TOKEN
    )
    clean = redact(text, [TOKEN])
    assert TOKEN not in clean and "hunter2-password" not in clean
    assert "/callbacks/[redacted]?kind=video" in clean
    assert "redis://user:[redacted]@redis.example.com:6379/0" in clean


def test_filter_redacts_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "got %s from %s", None, None)
    record.args = (TOKEN, "/callbacks/anything-else")
    try:
        raise ValueError(f"bad path /callbacks/{TOKEN}")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter([TOKEN]).filter(record)
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted and "anything-else" not in formatted
    assert "got [redacted] from /callbacks/[redacted]" in formatted
    assert "ValueError: bad path /callbacks/[redacted]" in formatted


def test_refuses_to_start_without_a_long_enough_token(redis_url) -> None:
    with pytest.raises(SettingsError, match="CALLBACK_TOKENS is empty"):
        create_app(Settings(redis_url=redis_url))
    with pytest.raises(SettingsError, match="at least 16"):
        create_app(Settings(callback_tokens=(TOKEN, "short"), redis_url=redis_url))


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.1", None, 1, "10.0.0.1"),
        ("10.0.0.1", "203.0.113.9", 0, "10.0.0.1"),  # no proxy trusted: the header is ignored
        ("10.0.0.1", "203.0.113.9", 1, "203.0.113.9"),  # Heroku: the router appends one
        ("10.0.0.1", "6.6.6.6, 203.0.113.9", 1, "203.0.113.9"),  # leftmost is the client's claim
        ("10.0.0.1", "6.6.6.6,203.0.113.9, 10.1.1.1", 2, "203.0.113.9"),
        ("10.0.0.1", "203.0.113.9", 2, "10.0.0.1"),  # fewer hops than proxies: not through them
    ],
)
def test_client_address_is_the_outermost_trusted_proxys_entry(
    remote, forwarded, trusted, expected
) -> None:
    assert client_address(remote, forwarded, trusted) == expected


@pytest.fixture
def guarded(settings):
    allowed = settings.with_overrides(
        trusted_proxies=1, allowed_source_cidrs=("203.0.113.0/24", "2001:db8::/32")
    )
    return create_app(allowed).test_client()


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [
        ("203.0.113.9", 202),
        ("10.9.9.9, 203.0.113.10", 202),
        ("2001:db8::7", 202),
        ("203.0.113.9, 198.51.100.1", 403),  # a spoofed allowed address on the left
        (None, 403),  # the peer (the proxy) is not an allowed source
        ("not-an-address", 403),
    ],
)
def test_allowlist_reads_the_right_entry_and_stores_nothing_outside(
    guarded, redis_client, forwarded, status
) -> None:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    response = guarded.post(
        URL, data=fixture("shutdown"), headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )
    assert response.status_code == status
    if status == 403:
        assert response.json["error"] == "forbidden_source"
        assert redis_client.dbsize() == 0


def test_no_secret_reaches_gunicorns_logs(tmp_path: Path) -> None:
    """A real run: right and wrong tokens, Basic auth, a broken request line, a request killed
    mid-way (gunicorn logs its path), Redis going away; then grep every line for a secret."""
    server = RedisServer(tmp_path / "redis").start()
    admin = redis.Redis.from_url(server.url)
    password = "redis-secret-password-42"
    admin.acl_setuser(
        "app", enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
        commands=["+@all"],
    )  # fmt: skip
    db_password = "database-secret-password-7"
    env = base_env(
        REDIS_URL=f"redis://app:{password}@127.0.0.1:{server.port}/0",
        DATABASE_URL=f"postgresql://tc:{db_password}@127.0.0.1:5432/none",
        CALLBACK_TOKENS=TOKEN,
        SPOOL_DIR=str(tmp_path / "spool"),
        LOG_LEVEL="debug",
        # The arbiter kills a worker stuck past 3 s: the slow request below dies mid-way, which
        # is when gunicorn logs "Error handling request <path>" with a traceback.
        GUNICORN_CMD_ARGS="--timeout 3",
    )
    log = tmp_path / "web.log"
    web = Web(env, log).start()
    try:
        base = f"{web.url}/callbacks"
        assert requests.post(f"{base}/{TOKEN}", data=fixture("shutdown")).status_code == 202
        auth = ("tavus", TOKEN)
        assert requests.post(base, data=fixture("guardrail"), auth=auth).status_code == 202
        wrong = TOKEN[:-1] + "X"
        assert requests.post(f"{base}/{wrong}", data=fixture("shutdown")).status_code == 401
        broken = f"POST /callbacks/{TOKEN}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert exchange(web.port, broken).status == 400
        body = fixture("video_ready")
        killed = exchange(web.port, request_head(len(body)), (body[:1], body[1:2]), pause=2.5)
        assert killed.status in (None, 500)  # the worker was killed: the sender will retry
        server.stop()
        spooled = requests.post(f"{base}/{TOKEN}", data=fixture("replica_training_ready"))
        assert spooled.json()["status"] == "spooled"
        assert requests.get(f"{web.url}/readyz").json()["status"] == "degraded"
        server.start()
        time.sleep(1)
    finally:
        web.stop()
        server.stop()
    text = log.read_text()
    assert "WORKER TIMEOUT" in text
    assert "Error handling request POST /callbacks/[redacted]" in text
    assert "Invalid HTTP request line: 'POST /callbacks/[redacted] HTTP/1.1'" in text
    assert "spooling event" in text
    for secret in (TOKEN, wrong, password, db_password):
        assert secret not in text, secret
