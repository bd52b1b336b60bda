"""What the tests share that is not a fixture: the token and the documented payloads, a worker's
environment, the receiver's queue as a test reads it, a raw HTTP client, a load that posts like
Tavus, and a fake of Tavus's API. Fixtures live in plugins (``tests/shared_fixtures.py`` and
the others named in ``tests/conftest.py``); no test module imports from another."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import redis
import requests

from cli.simulate import conversation_lifecycle
from schemas.classify import classify
from schemas.messages import EVENTS_QUEUE, event_message
from schemas.settings import Settings
from tests.services import base_env, free_port
from workers import forwarding, processing
from workers.store.db import Store
from workers.store.models import Conversation

TOKEN = "test-token-0123456789abcdef"
FIXTURES = Path(__file__).with_name("fixtures")  # the Tavus docs examples, placeholders kept
# What deploy/ ships for Prometheus and Grafana (tests/test_prometheus_rules.py, test_dashboard.py).
_DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULE_FILES = (_DEPLOY / "prometheus" / "recording.yml", _DEPLOY / "prometheus" / "alerts.yml")
DASHBOARD = _DEPLOY / "grafana" / "tavus-callbacks.json"


def fixture(name: str) -> bytes:
    """A documented payload from shared/fixtures, placeholders and all."""
    return (FIXTURES / f"{name}.json").read_bytes()


def fixture_json(name: str) -> dict:
    return json.loads(fixture(name))


def transcript_said(conversation_id: str, entries: list[dict], at: datetime) -> dict:
    """A transcription_ready callback whose transcript is ``entries``, sent at ``at``."""
    body = fixture_json("transcription_ready") | {
        "conversation_id": conversation_id,
        "timestamp": at.isoformat(),
    }
    body["properties"]["transcript"] = entries
    return body


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    return base_env(
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        CALLBACK_TOKENS=",".join(settings.callback_tokens),
        **extra,
    )


# The receiver's queue ----------------------------------------------------------------------


def queued(redis_client: redis.Redis) -> list[dict]:
    """The event messages waiting in the events queue, oldest first."""
    envelopes = [orjson.loads(item) for item in reversed(redis_client.lrange(EVENTS_QUEUE, 0, -1))]
    return [orjson.loads(e["body"])[0][0] for e in envelopes]


# A raw HTTP client, for what requests will not send -----------------------------------------


@dataclass
class Answer:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> dict:
        assert self.headers.get("content-type") == "application/json", self
        return orjson.loads(self.body)


def exchange(
    port: int, head: bytes, chunks: Iterable[bytes] = (), pause: float = 0.0, timeout: float = 60
) -> Answer:
    """Send ``head`` then ``chunks`` (``pause`` apart) while reading the answer, as a raw client."""
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(timeout)

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in chunks:
                time.sleep(pause)
                sock.sendall(chunk)
        except OSError:  # the server answered and closed: stop sending, as a client would
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    seconds = time.monotonic() - started
    if not received:
        return Answer(None, {}, b"", seconds)
    head_text, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_text.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return Answer(int(status_line.split()[1]), headers, body, seconds)


def request_head(length: int | None = None, path: str = f"/callbacks/{TOKEN}") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: test\r\n{framing}\r\n\r\n".encode()


# A load that posts like Tavus ---------------------------------------------------------------


def load(count: int, tag: str) -> list[bytes]:
    """``count`` distinct callbacks from whole conversations: joined (both names), shutdown,
    transcript, perception, recording, objective. Guardrails are left out: identical guardrail
    bodies 10 s apart are two triggers by design, which would blur the count of a resend."""
    bodies: list[bytes] = []
    number = 0
    while len(bodies) < count:
        for body in conversation_lifecycle(f"c-{tag}-{number:03d}"):
            if "event_type" in body:
                bodies.append(orjson.dumps(body))
        number += 1
    return bodies[:count]


class Load:
    """Posts bodies from a few threads in the background, like Tavus, and keeps every answer.

    With ``resend``, a body that got no answer or a 5xx is posted again until it gets a 2xx, as
    a sender that retries would; without, the outcome is kept as it came ("refused", "http 503").
    """

    def __init__(
        self,
        url: str,
        bodies: list[bytes],
        threads: int = 4,
        resend: bool = False,
        pace: float = 0.0,
    ) -> None:
        self.url = url
        self.bodies = bodies
        self.threads = threads
        self.resend = resend
        self.pace = pace  # seconds each thread waits between posts, to spread the load
        self.outcomes: dict[int, str] = {}
        self.failed_attempts: Counter[str] = Counter()
        self._local = threading.local()
        self._runner = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._runner.start()
        return self

    def join(self, timeout: float = 120) -> Load:
        self._runner.join(timeout)
        assert not self._runner.is_alive(), "the load did not finish"
        return self

    def answered(self) -> int:
        return len(self.outcomes)

    def count(self) -> Counter[str]:
        return Counter(self.outcomes.values())

    def _run(self) -> None:
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self._send, range(len(self.bodies))))

    def _send(self, index: int) -> None:
        session = getattr(self._local, "session", None) or requests.Session()
        self._local.session = session
        deadline = time.monotonic() + 90
        while True:
            outcome = post(session, self.url, self.bodies[index])
            if not self.resend or outcome in ("accepted", "duplicate", "spooled"):
                break
            self.failed_attempts[outcome] += 1
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.outcomes[index] = outcome
        time.sleep(self.pace)


def post(session: requests.Session, url: str, body: bytes) -> str:
    """One delivery: the status the receiver answered, "refused" without an answer."""
    try:
        response = session.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=15
        )
    except requests.ConnectionError:
        return "refused"
    if response.status_code >= 500:
        return f"http {response.status_code}"
    assert response.status_code in (200, 202), response.text
    return response.json()["status"]


# A fake of Tavus's API (the real one cannot run here) ---------------------------------------


API_KEY = "tavus-api-key-never-logged-0123456789"


@dataclass
class FakeTavus:
    """Serves conversations as Tavus's API would, and keeps every request it got."""

    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Answers to give before the normal ones: (status, headers), first in first out.
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.requests.append(
                    {
                        "path": parts.path,
                        "query": parse_qs(parts.query),
                        "api_key": self.headers.get("x-api-key"),
                    }
                )
                if fake.failures:
                    status, headers = fake.failures.pop(0)
                    self._answer(status, {"message": "slow down"}, headers)
                elif self.headers.get("x-api-key") != API_KEY:
                    self._answer(401, {"message": "Invalid access token"})
                else:
                    conversation_id = parts.path.rsplit("/", 1)[-1]
                    found = fake.conversations.get(conversation_id)
                    self._answer(200 if found else 404, found or {"message": "not found"})

            def _answer(self, status: int, body: Any, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return ThreadingHTTPServer(("127.0.0.1", self.port), Handler)

    def holds(self, conversation_id: str, callbacks: list[dict[str, Any]]) -> None:
        """The conversation as Tavus returns it: its events, as the callbacks carried them."""
        events = [
            {k: v for k, v in body.items() if k not in ("conversation_id", "webhook_url")}
            for body in callbacks
            if "event_type" in body and body["event_type"].startswith(("system.", "application."))
        ]
        self.conversations[conversation_id] = {
            "conversation_id": conversation_id,
            "status": "ended",
            "events": events,
        }


def ended(store: Store, conversation_id: str, at: datetime, transcript: bool = False) -> None:
    """A conversation whose shutdown callback was stored (and, with ``transcript``, its text)."""
    with store.session() as session:
        session.add(
            Conversation(
                conversation_id=conversation_id,
                ended_at=at,
                first_seen_at=at,
                updated_at=at,
                transcript=[{"role": "user", "content": "hi"}] if transcript else None,
                transcript_at=at if transcript else None,
                perception_analysis="kept" if transcript else None,
            )
        )


# --- forwarding without Celery: an event processed as the worker does, then delivered -----


def stored_event(store: Store, body: dict | bytes, source: str = "callback") -> tuple[str, dict]:
    """Process one callback as the worker does; its id and message."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    parsed = orjson.loads(raw)
    message = event_message(classify(parsed, raw), raw, time.time(), source)
    outcome = processing.process(store, message, lambda *_: None, 8)
    return outcome.event_id, message | {"status": outcome.status}


def deliver_all(store: Store, settings: Settings, event_id: str, message: dict) -> list:
    tasks = forwarding.tasks_for(event_id, message, message["status"], settings)
    return [forwarding.deliver(store, *task["args"], settings) for task in tasks]


# Content markers: where a piece of content may be found ----------------------------------------


def spooling_settings(redis_url: str, database_url: str, spool_dir: Path, **extra: Any) -> Settings:
    """A receiver's settings whose spool is drained by hand only (it keeps what it takes)."""
    return Settings(
        callback_tokens=(TOKEN,),
        redis_url=redis_url,
        database_url=database_url,
        spool_dir=str(spool_dir),
        spool_drain_interval_seconds=0,
        **extra,
    )


def conversation_bodies(conversation_id: str, marker: str) -> list[dict[str, Any]]:
    """A conversation's content callbacks, each carrying ``marker``."""
    base = {"conversation_id": conversation_id, "timestamp": "2025-07-11T06:50:01.100000Z"}
    return [
        {
            **base,
            "event_type": "application.transcription_ready",
            "message_type": "application",
            "properties": {"transcript": [{"role": "user", "content": f"I am {marker}"}]},
        },
        {
            **base,
            "event_type": "application.perception_analysis",
            "message_type": "application",
            "properties": {"analysis": f"the user, {marker}, smiled"},
        },
        {
            "conversation_id": conversation_id,
            "objective_name": "get_name",
            "output_variables": {"name": marker},
        },
        {"conversation_id": conversation_id, "properties": {"guardrail": f"no_{marker}"}},
    ]


def found_in_files(place: Path, marker: bytes) -> list[str]:
    """The files of ``place`` (a file, or a folder's, recursively) that hold ``marker``."""
    files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
    # Lower case too: a search index keeps words folded.
    return [str(p) for p in files if marker.lower() in p.read_bytes().lower()]


def found_in_redis(client: redis.Redis, marker: bytes) -> list[str]:
    """Keys whose value holds ``marker``, whatever their type."""
    hits = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        elif kind == b"set":
            values = list(client.smembers(key))
        else:
            values = []
        if any(marker in value for value in values):
            hits.append(key.decode(errors="replace"))
    return hits
