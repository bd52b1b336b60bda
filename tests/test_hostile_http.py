"""Hostile clients against the real web process (gunicorn, deploy/gunicorn.conf.py, 2 workers):
a 50 MiB body, sent whole or chunked, and slow clients. Always a 4xx with a JSON body or a
dropped connection within a bounded time; never a 5xx, never a hang, and other callers are
served meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import TOKEN, Answer, exchange, fixture, request_head
from tests.services import Web, base_env

pytestmark = pytest.mark.integration

BODY_TIMEOUT = 2  # seconds: BODY_TIMEOUT_SECONDS for this server
MIB = 1024 * 1024


@pytest.fixture
def web(redis_url: str, tmp_path: Path) -> Iterator[Web]:
    env = base_env(
        REDIS_URL=redis_url,
        CALLBACK_TOKENS=TOKEN,
        SPOOL_DIR=str(tmp_path / "spool"),
        BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    )
    server = Web(env, tmp_path / "web.log", workers=2).start()
    yield server
    server.stop()
    assert b"500 Internal" not in (tmp_path / "web.log").read_bytes()


def fifty_mib_json() -> Iterator[bytes]:
    """A JSON object 50 MiB long: only its size is wrong."""
    yield b'{"conversation_id": "c", "event_type": "x", "pad": "'
    for _ in range(50 * 16):
        yield b"a" * (64 * 1024)
    yield b'"}'


def chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def test_fifty_mib_body_is_413_json(web) -> None:
    answer = exchange(web.port, request_head(50 * MIB + 54), fifty_mib_json())
    assert answer.status == 413
    assert answer.json()["error"] == "request_entity_too_large"
    assert answer.seconds < 10


def test_fifty_mib_chunked_body_is_413_json(web) -> None:
    answer = exchange(web.port, request_head(), chunked(fifty_mib_json()))
    assert answer.status == 413
    assert answer.json()["error"] == "request_entity_too_large"
    assert answer.seconds < 10


def test_slow_body_is_408_json_and_others_are_served_meanwhile(web) -> None:
    body = fixture("shutdown")
    slow: list[Answer] = []
    trickle = threading.Thread(
        target=lambda: slow.append(
            exchange(web.port, request_head(len(body)), (bytes([b]) for b in body), pause=0.5)
        )
    )
    trickle.start()
    time.sleep(0.5)
    # The trickling client holds one worker; the other still answers at once.
    quick = requests.post(f"{web.url}/callbacks/{TOKEN}", data=fixture("guardrail"), timeout=5)
    assert quick.status_code == 202
    trickle.join(timeout=30)
    [answer] = slow
    assert answer.status == 408
    assert answer.json() == {
        "error": "request_timeout",
        "message": f"the body did not arrive within {BODY_TIMEOUT} s",
    }
    assert BODY_TIMEOUT <= answer.seconds < BODY_TIMEOUT + 5


def test_slow_chunked_body_is_408_json(web) -> None:
    answer = exchange(web.port, request_head(), chunked(b"{" for _ in range(100)), pause=0.5)
    assert answer.status == 408
    assert answer.json()["error"] == "request_timeout"


def test_slow_headers_are_dropped_within_a_bound_not_answered_500(web) -> None:
    """Headers a byte at a time: no request exists yet, so the connection is just closed."""
    head = f"POST /callbacks/{TOKEN} HTTP/1.1\r\nHost: test\r\nX-Pad: {'a' * 100}\r\n\r\n"
    answer = exchange(web.port, b"", (bytes([c]) for c in head.encode()), pause=0.2)
    assert answer.status is None
    assert answer.seconds < 2 * BODY_TIMEOUT + 3
    assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200


def test_many_slow_clients_do_not_stop_the_service(web) -> None:
    """Six trickling clients against two workers: each is cut off, and service resumes."""
    answers: list[Answer] = []
    body = fixture("shutdown")
    clients = [
        threading.Thread(
            target=lambda: answers.append(
                exchange(web.port, request_head(len(body)), (bytes([b]) for b in body), pause=0.3)
            )
        )
        for _ in range(6)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    assert len(answers) == 6
    assert {a.status for a in answers} == {408}
    assert max(a.seconds for a in answers) < 3 * (BODY_TIMEOUT + 1) + 5
    quick = requests.post(f"{web.url}/callbacks/{TOKEN}", data=fixture("guardrail"), timeout=5)
    assert quick.status_code == 202
