"""A person finds a conversation by a phrase from its transcript, in a real headless Chromium,
against the web process as the Procfile runs it (gunicorn, deploy.wsgi:app), a real Celery
worker that stored the transcripts from real callbacks, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.browser import CHROMIUM, CHROMIUM_ARGS, sign_in
from tests.console_fixtures import answering, env_for
from tests.helpers import TOKEN, transcript_said
from tests.services import ROOT, RedisServer, Web, Worker, wait_until
from workers.store.db import Store

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "test-artifacts" / "console"
PHRASE = "the invoice was paid twice"
TRANSCRIPTS = {
    "c-invoice": [
        {"role": "user", "content": "Hello, I need help with billing."},
        {"role": "assistant", "content": "Of course. What happened?"},
        {"role": "user", "content": "I think the invoice was paid twice last month."},
    ],
    "c-weather": [
        {"role": "user", "content": "Will it rain tomorrow?"},
        {"role": "assistant", "content": "Probably, so the picnic was paid for nothing."},
    ],
}


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request, redis_server: RedisServer, tmp_path: Path) -> Iterator[dict]:
    database_url = request.getfixturevalue(f"{request.param}_url")
    store = Store(database_url)
    store.upgrade()
    env = env_for(redis_server.url, store.url)
    worker = Worker(env, tmp_path / "worker.log", queues="events,storage,alerts,forward,hooks")
    worker.start()
    web = answering(Web(env, tmp_path / "web.log", workers=1, app="deploy.wsgi:app").start())
    try:
        yield {"web": web, "store": store, "name": request.param}
    finally:
        web.stop()
        worker.stop()
        store.dispose()


@pytest.fixture
def page(stack) -> Iterator:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(base_url=stack["web"].url)
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        chromium.close()


def post_transcripts(stack: dict) -> None:
    for conversation_id, entries in TRANSCRIPTS.items():
        body = transcript_said(conversation_id, entries, datetime.now(UTC))
        reply = requests.post(f"{stack['web'].url}/callbacks/{TOKEN}", json=body, timeout=30)
        assert reply.status_code == 202, reply.text


def search_for(page, words: str) -> None:
    page.goto("/console/conversations")
    page.fill("#search", words)
    with page.expect_navigation():
        page.press("#search", "Enter")


def test_a_person_finds_a_conversation_by_a_phrase_said_in_it(page, stack) -> None:
    post_transcripts(stack)
    sign_in(page)

    def found() -> bool:
        search_for(page, PHRASE)
        return "c-invoice" in page.inner_text("#conversations")

    wait_until(found, timeout=60, interval=1)  # once the worker has stored the transcripts
    assert "q=the+invoice+was+paid+twice" in page.url
    rows = page.locator("#conversations tbody tr")
    assert rows.count() == 1  # "was paid" alone is in the other one too: every word counts
    match = rows.locator("td.match")
    assert "I think the invoice was paid twice last month." in match.inner_text()
    assert "user" in match.locator(".role").inner_text().lower()  # who said it
    marked = [word.lower() for word in match.locator("mark").all_inner_texts()]
    assert {"invoice", "paid", "twice"} <= set(marked)
    assert page.input_value("#search") == PHRASE  # the box keeps what was typed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"search-{stack['name']}.png"), full_page=True)

    match.locator("a").click()
    page.wait_for_url("**/console/conversations/c-invoice#line-2")
    assert "invoice was paid twice" in page.inner_text("#line-2")

    search_for(page, "nobody ever said this")
    assert "no conversation says that" in page.inner_text("#conversations")
