"""The console's pages through Flask's test client: off without a password, sign-in and its
throttle, CSRF on every POST, cookies, escaping and the security headers. (The real browser is
tests/test_console_browser.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console import create_app
from console.security import SIGNIN_LIMIT
from tests.console_fixtures import (
    PASSWORD,
    T0,
    add_event,
    console_settings,
    csrf_of,
    failed_shutdown,
    sign_in,
)
from workers.store.db import Store
from workers.store.models import Conversation, Event, EventStatus, ForwardDelivery

HOSTILE = '<script>alert("x")</script><img src=x onerror="alert(1)">'


@pytest.fixture
def settings(redis_url: str, sqlite_store: Store, tmp_path: Path):
    return console_settings(redis_url, sqlite_store.url, tmp_path)


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def test_no_password_means_no_console(settings) -> None:
    client = create_app(settings.with_overrides(console_password=None)).test_client()
    assert client.get("/console/login").status_code == 404
    assert client.get("/console/").status_code == 404


def test_pages_need_a_sign_in_and_the_right_password(client) -> None:
    page = client.get("/console/events")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/console/login?next=/console/events")
    wrong = sign_in(client, "not the password")
    assert wrong.status_code == 401 and b"Wrong password." in wrong.data
    assert client.get("/console/events").status_code == 302
    right = sign_in(client)
    assert right.status_code == 302
    assert client.get("/console/events").status_code == 200


def test_sign_in_goes_back_to_the_console_page_only(client) -> None:
    token = csrf_of(client.get("/console/login").data)
    away = {"password": PASSWORD, "csrf_token": token, "next": "https://evil.example/"}
    assert client.post("/console/login", data=away).headers["Location"] == "/console/"
    client.post("/console/logout", data={"csrf_token": csrf_of(client.get("/console/").data)})
    token = csrf_of(client.get("/console/login").data)
    back = {"password": PASSWORD, "csrf_token": token, "next": "/console/alerts"}
    assert client.post("/console/login", data=back).headers["Location"] == "/console/alerts"


def test_sign_in_is_throttled(client) -> None:
    for _ in range(SIGNIN_LIMIT):
        assert sign_in(client, "guess").status_code == 401
    blocked = sign_in(client)  # even the right password, until the window ends
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0


def test_a_post_without_the_csrf_token_is_refused(client, sqlite_store) -> None:
    refused = client.post("/console/login", data={"password": PASSWORD})
    assert refused.status_code == 400 and b"CSRF" in refused.data
    sign_in(client)
    event_id = failed_shutdown(sqlite_store, "c-csrf")
    for data in ({}, {"csrf_token": "forged"}):
        assert client.post(f"/console/events/{event_id}/replay", data=data).status_code == 400
    with sqlite_store.session() as session:
        assert session.get(Event, event_id).status == EventStatus.FAILED


def test_session_cookie_flags(settings) -> None:
    app = create_app(settings)

    def cookie(**options) -> str:  # a new browser each time: the cookie is set afresh
        return app.test_client().get("/console/login", **options).headers["Set-Cookie"]

    plain = cookie()
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Path=/console" in plain
    assert "Secure" not in plain  # plain HTTP, no proxy trusted
    spoofed = cookie(headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in spoofed  # TRUSTED_PROXIES=0: the header is not believed
    assert "Secure" in cookie(base_url="https://localhost")


def test_payload_text_is_escaped_and_a_csp_forbids_inline_script(client, sqlite_store) -> None:
    now = datetime.now(UTC)
    with sqlite_store.session() as session:
        session.add(
            Conversation(
                conversation_id="c-hostile",
                transcript=[{"role": "user", "content": HOSTILE}],
                shutdown_reason=HOSTILE,
                first_seen_at=now,
                updated_at=now,
            )
        )
    event_id = add_event(sqlite_store, T0, conversation_id="c-hostile", body={"x": HOSTILE})
    sign_in(client)
    for path in ("/console/conversations/c-hostile", f"/console/events/{event_id}"):
        page = client.get(path)
        assert page.status_code == 200
        assert b"<script>alert" not in page.data and b"<img src=x" not in page.data
        assert b"&lt;script&gt;alert(" in page.data
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_search_by_any_id(client, sqlite_store) -> None:
    event_id = add_event(sqlite_store, T0, conversation_id="c-found")
    sign_in(client)
    assert client.get(f"/console/events?q={event_id}").headers["Location"].endswith(event_id)
    found = client.get("/console/events?q=c-found").headers["Location"]
    assert found == "/console/conversations/c-found"
    missing = client.get("/console/events?q=nothing-by-that-id")
    assert missing.status_code == 200 and b"Nothing has the id" in missing.data


def test_every_page_renders(client, sqlite_store) -> None:
    failed_shutdown(sqlite_store, "c-pages")
    sign_in(client)
    for path in ("/console/", "/console/events", "/console/events?status=failed",
                 "/console/conversations", "/console/alerts", "/console/deliveries",
                 "/console/events?since=garbage"):  # fmt: skip
        page = client.get(path)
        assert page.status_code == 200, path
    assert b"Not a valid datetime" in client.get("/console/events?since=garbage").data
    assert client.get("/console/events/nope").status_code == 404


def test_the_events_page_shows_each_events_resource(client, sqlite_store) -> None:
    """A replica's, video's or document's id, as the CLI shows it, linked to its page."""
    add_event(
        sqlite_store,
        T0,
        kind="replica",
        event_type=None,
        conversation_id=None,
        body={"replica_id": "r-shown-here", "status": "ready"},
    )
    add_event(sqlite_store, T0, conversation_id="c-no-resource")
    sign_in(client)
    page = client.get("/console/events").get_data(as_text=True)
    assert '<a class="resource-link" href="/console/replicas/r-shown-here">r-shown-here</a>' in page
    assert page.count('class="resource-link"') == 1  # a conversation's event names none


def test_the_charts_page_draws_events_latency_deliveries_and_queues(client, sqlite_store) -> None:
    """Inline SVG from the store and Redis, each chart named in words (not by colour alone)."""
    now = datetime.now(UTC)
    for minutes_ago, status in (
        (1, "processed"),
        (1, "processed"),
        (3, "failed"),
        (30 * 60, "processed"),
    ):
        received = now - timedelta(minutes=minutes_ago)
        add_event(
            sqlite_store, received, status=status, processed_at=received + timedelta(seconds=2)
        )
    long_ago = now - timedelta(hours=30)  # their events fall outside the 24 hours drawn
    with sqlite_store.session() as session:
        for status in ("delivered", "delivered", "delivered", "failed"):
            event_id = add_event(sqlite_store, long_ago)
            session.add(
                ForwardDelivery(
                    event_id=event_id, destination="app", source="callback", status=status
                )
            )
    sign_in(client)
    page = client.get("/console/charts").get_data(as_text=True)
    strips = re.findall(
        r'aria-label="(\w+): (\d+) events in 24 hours, at most (\d+) a minute"', page
    )
    assert sorted(strips) == [("failed", "1", "1"), ("processed", "2", "2")]  # 30 h ago: out
    assert "app</b>: 75% delivered (3 of 4, 1 failed)" in page
    assert 'aria-label="app: 3 delivered, 1 failed, 0 not finished"' in page
    assert re.search(r"p50 2 s, p95 2 s, \d events", page)
    assert "<title>events: 0</title>" in page  # queue depth, from Redis
    assert "<script" not in page.split("</head>", 1)[1]
