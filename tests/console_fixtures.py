"""What the console's tests share: settings with an API token and a password, events written
straight into the store, a signed-in test client, and a web process's environment. Helpers
only: the fixtures are in ``tests/shared_fixtures.py``."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import requests

from schemas.settings import Settings
from tests.helpers import TOKEN, fixture_json
from tests.services import Web, base_env, wait_until
from workers.store.db import Store
from workers.store.models import Event, EventStatus

API_TOKEN = "api-token-0123456789abcdef"
PASSWORD = "correct horse battery staple"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def console_settings(redis_url: str, database_url: str, tmp_path: Path, **extra) -> Settings:
    return Settings(
        callback_tokens=(TOKEN,),
        redis_url=redis_url,
        database_url=database_url,
        spool_dir=str(tmp_path / "spool"),
        api_tokens=(API_TOKEN,),
        console_password=PASSWORD,
        secret_key="test-secret-key",
        **extra,
    )


def add_event(
    store: Store,
    received_at: datetime,
    *,
    kind: str = "conversation",
    event_type: str | None = "system.shutdown",
    conversation_id: str | None = "c-1",
    status: str = EventStatus.PROCESSED,
    body: dict | None = None,
    event_id: str | None = None,
    **columns,
) -> str:
    event_id = event_id or str(uuid.uuid4())
    with store.session() as session:
        session.add(
            Event(
                id=event_id,
                event_key=f"key-{event_id}",
                kind=kind,
                event_type=event_type,
                conversation_id=conversation_id,
                received_at=received_at,
                body=orjson.dumps(body or {"conversation_id": conversation_id}).decode(),
                status=status,
                attempts=columns.pop("attempts", 1),
                **columns,
            )
        )
    return event_id


def failed_shutdown(store: Store, conversation_id: str) -> str:
    """A dead-lettered event whose body is a real callback: replaying it processes it."""
    body = fixture_json("shutdown") | {"conversation_id": conversation_id}
    return add_event(
        store,
        datetime.now(UTC) - timedelta(minutes=5),
        conversation_id=conversation_id,
        status=EventStatus.FAILED,
        body=body,
        attempts=8,
        last_error="OperationalError: the store refused",
    )


def csrf_of(html: bytes | str) -> str:
    text = html.decode() if isinstance(html, bytes) else html
    return re.search(r'name="csrf_token" value="([^"]+)"', text)[1]


def sign_in(client, password: str = PASSWORD):
    token = csrf_of(client.get("/console/login").data)
    return client.post("/console/login", data={"password": password, "csrf_token": token})


def env_for(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return base_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        CALLBACK_TOKENS=TOKEN,
        API_TOKENS=API_TOKEN,
        CONSOLE_PASSWORD=PASSWORD,
        SECRET_KEY="gunicorn-test-secret",
        **extra,
    )


def answering(web: Web, path: str = "/healthz") -> Web:
    """Each gunicorn worker builds its apps after it boots: wait until the service answers."""

    def up() -> bool:
        try:
            return requests.get(f"{web.url}{path}", timeout=5).status_code < 500
        except requests.RequestException:
            return False

    wait_until(up, timeout=90, interval=0.5)
    return web
