"""The web process as the Procfile runs it (gunicorn, deploy.wsgi:app) with a real Celery
worker: callbacks, the read API and the console side by side; paging over HTTP while
callbacks arrive; replay; CONSOLE_ENABLED=false; the console alone (deploy.wsgi:console_app)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cli.simulate import conversation_lifecycle
from tests.console_fixtures import BEARER, answering, env_for, failed_shutdown
from tests.helpers import TOKEN
from tests.services import Web, Worker, wait_until
from workers.store.db import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def web_stack(redis_url: str, store: Store, tmp_path: Path) -> Iterator[dict]:
    env = env_for(redis_url, store.url, TRUSTED_PROXIES="1")
    worker = Worker(env, tmp_path / "worker.log").start()
    web = answering(Web(env, tmp_path / "web.log", workers=2, app="deploy.wsgi:app").start())
    try:
        yield {"web": web, "store": store}
    finally:
        web.stop()
        worker.stop()


def post_conversation(base: str, conversation_id: str) -> int:
    sent = 0
    for body in conversation_lifecycle(conversation_id):
        reply = requests.post(f"{base}/callbacks/{TOKEN}", json=body, timeout=30)
        assert reply.status_code == 202, reply.text
        sent += 1
    return sent


def api(base: str, path: str, **params) -> requests.Response:
    return requests.get(f"{base}/api/v1{path}", params=params, headers=BEARER, timeout=30)


def test_one_web_process_serves_callbacks_api_and_console(web_stack) -> None:
    base = web_stack["web"].url
    total = sum(post_conversation(base, f"c-web-{n}") for n in range(3))

    def processed() -> list[dict]:
        rows = api(base, "/events", limit=200).json()["data"]
        done = [r for r in rows if r["status"] == "processed"]
        return rows if len(done) == total else []

    before = {row["event_id"] for row in wait_until(processed, timeout=60)}

    # Page through 7 at a time while a new conversation's callbacks arrive between pages.
    seen: list[str] = []
    cursor, arriving = None, 0
    while True:
        page = api(base, "/events", limit=7, **({"cursor": cursor} if cursor else {})).json()
        seen += [row["event_id"] for row in page["data"]]
        arriving += 1
        post_conversation(base, f"c-late-{arriving}")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    newer = set(seen) - before
    assert len(seen) == len(set(seen)), "an event came twice"
    assert before <= set(seen), "an event was skipped"
    # Late events may show on a later page only when their received_at is older than the
    # cursor (stored late); none is repeated either way.
    assert all(row not in before for row in newer)

    assert requests.get(f"{base}/api/v1/events", timeout=30).status_code == 401
    record = api(base, "/conversations/c-web-1").json()
    assert record["conversation_id"] == "c-web-1" and record["transcript"]

    event_id = failed_shutdown(web_stack["store"], "c-web-replayed")
    replay = requests.post(f"{base}/api/v1/events/{event_id}/replay", headers=BEARER, timeout=30)
    assert replay.status_code == 202, replay.text
    wait_until(lambda: api(base, f"/events/{event_id}").json()["status"] == "processed", 30)

    login = requests.get(f"{base}/console/login", timeout=30)
    assert login.status_code == 200 and 'name="password"' in login.text
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    behind_https = requests.get(
        f"{base}/console/login", headers={"X-Forwarded-Proto": "https"}, timeout=10
    )
    assert "Secure" in behind_https.headers["Set-Cookie"]  # TRUSTED_PROXIES=1: the proxy says
    assert requests.get(f"{base}/healthz", timeout=30).status_code == 200


def test_console_disabled_leaves_the_intake_alone(redis_url, sqlite_url, tmp_path) -> None:
    Store(sqlite_url).upgrade()
    env = env_for(redis_url, sqlite_url, CONSOLE_ENABLED="false")
    web = answering(Web(env, tmp_path / "web.log", workers=1, app="deploy.wsgi:app").start())
    try:
        body = conversation_lifecycle("c-off")[0]
        assert (
            requests.post(f"{web.url}/callbacks/{TOKEN}", json=body, timeout=30).status_code == 202
        )
        assert api(web.url, "/events").status_code == 404
        assert requests.get(f"{web.url}/console/login", timeout=30).status_code == 404
    finally:
        web.stop()


def test_console_process_alone(redis_url, sqlite_url, tmp_path) -> None:
    Store(sqlite_url).upgrade()
    env = env_for(redis_url, sqlite_url)
    del env["CALLBACK_TOKENS"]  # the console process needs none
    web = Web(env, tmp_path / "console.log", workers=1, app="deploy.wsgi:console_app")
    answering(web.start(), "/console/login")
    try:
        assert api(web.url, "/events").json() == {"data": [], "next_cursor": None}
        assert requests.get(f"{web.url}/console/login", timeout=30).status_code == 200
        posted = requests.post(f"{web.url}/callbacks/{TOKEN}", json={}, timeout=30)
        assert posted.status_code == 404
    finally:
        web.stop()


def test_dev_prints_the_console_url_and_a_password_that_signs_in(dev_server) -> None:
    log = dev_server["log"].read_text()
    found = re.search(r"Console: +(\S+)  password: (\S+)", log)
    assert found, log
    url, password = found[1], found[2]
    token = re.search(r"API: +\S+  token: (\S+)", log)[1]
    session = requests.Session()
    login = session.get(f"{url}login", timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)[1]
    signed = session.post(
        f"{url}login", data={"password": password, "csrf_token": csrf}, timeout=30
    )
    assert signed.status_code == 200 and "Overview" in signed.text
    api_url = url.replace("/console/", "/api/v1/events")
    listed = requests.get(api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert listed.json()["data"] == [] or listed.status_code == 200
