"""The console in a real headless Chromium (Debian's, driven by Playwright), against the web
process as the Procfile runs it (gunicorn, deploy.wsgi:app), a real Celery worker and Redis.

A person signs in, filters events, reads a conversation's transcript, replays a failed event
and watches it turn processed, redelivers a failed delivery; a transcript carrying script stays
text; a wrong password fails. A screenshot of each page is kept in test-artifacts/console/.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from cli.simulate import conversation_lifecycle
from tests.browser import CHROMIUM, CHROMIUM_ARGS, sign_in
from tests.console_fixtures import answering, env_for, failed_shutdown
from tests.helpers import TOKEN, fixture_json
from tests.services import ROOT, RedisServer, Web, Worker, wait_until
from workers.store.db import Store
from workers.store.models import Alert, AlertDelivery, DeliveryStatus, ForwardDelivery

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "test-artifacts" / "console"


class Sink:
    """An HTTP server the injected payload points at: any request reaching it means the
    payload ran (or loaded something)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.posts: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sink.hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.posts.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("console-browser")
    store = Store(f"sqlite:///{folder / 'events.db'}")
    store.upgrade()
    sink, destination = Sink(), Sink()  # what an injected script would call; a user's endpoint
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    env = env_for(
        redis_server.url,
        store.url,
        FORWARD_SINK_URL=f"http://127.0.0.1:{destination.port}/hook",
        FORWARD_SINK_SECRET=secret,
    )
    worker = Worker(env, folder / "worker.log", queues="events,storage,alerts,forward,hooks")
    worker.start()
    web = answering(Web(env, folder / "web.log", workers=2, app="deploy.wsgi:app").start())
    try:
        yield {"web": web, "store": store, "sink": sink, "destination": destination}
    finally:
        sink.close()
        destination.close()
        web.stop()
        worker.stop()
        store.dispose()


@pytest.fixture(scope="module")
def browser(stack) -> Iterator:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(base_url=stack["web"].url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def post(stack, body: dict) -> None:
    reply = requests.post(f"{stack['web'].url}/callbacks/{TOKEN}", json=body, timeout=30)
    assert reply.status_code == 202, reply.text


def reload_until(page, selector: str, text: str, timeout: float = 45) -> None:
    def shows() -> bool:
        page.reload()
        return text in page.inner_text(selector)

    wait_until(shows, timeout=timeout, interval=1)


def test_wrong_password_fails(page) -> None:
    sign_in(page, "wrong password")
    assert "Wrong password." in page.inner_text("main")
    shot(page, "login-wrong-password")
    page.goto("/console/events")
    assert page.url.split("?")[0].endswith("/console/login")


def test_sign_in_filter_events_and_read_a_conversation(page, stack) -> None:
    for body in conversation_lifecycle("c-browser"):
        post(stack, body)
    sign_in(page)
    assert page.url.endswith("/console/")
    assert "Failed events" in page.inner_text("main")
    shot(page, "overview")

    page.goto("/console/events")
    reload_until(page, "#events", "application.transcription_ready")
    page.fill("input[name=type]", "application.transcription_ready")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**type=application.transcription_ready**")
    rows = page.locator("#events tbody tr")
    assert rows.count() == 1
    assert "application.transcription_ready" in rows.inner_text()
    shot(page, "events-filtered")

    rows.locator("a", has_text="c-browser").click()
    page.wait_for_url("**/console/conversations/c-browser")
    transcript = page.inner_text("#transcript")
    assert "what's the order number?" in transcript.lower() or len(transcript) > 100
    assert page.locator("#transcript .turn").count() == 13
    timeline = page.locator("#timeline li").all_inner_texts()
    assert len(timeline) == len(conversation_lifecycle("c-browser"))
    times = [line.split(" · ")[0] for line in timeline]
    assert times == sorted(times)  # in time order
    assert "s3://" in page.inner_text("#recording")
    shot(page, "conversation")


def test_replay_a_failed_event_until_it_is_processed(page, stack) -> None:
    event_id = failed_shutdown(stack["store"], "c-browser-replay")
    sign_in(page)
    page.goto("/console/events?status=failed")
    page.click(f"a.event-link:has-text('{event_id}')")
    page.wait_for_url(f"**/console/events/{event_id}")
    assert "failed" in page.inner_text("h1")
    assert "8 attempts" in page.inner_text("main")
    assert '"shutdown_reason"' in page.inner_text("#raw-body")  # pretty-printed raw body
    shot(page, "event-failed")
    page.click("#replay")
    assert "replayed (was failed)" in page.inner_text(".flash")
    reload_until(page, "h1", "processed")
    shot(page, "event-replayed")


def test_redeliver_a_failed_forward_delivery(page, stack) -> None:
    event_id = failed_shutdown(stack["store"], "c-browser-forward")
    with stack["store"].session() as session:
        session.add(
            ForwardDelivery(
                event_id=event_id,
                destination="sink",
                source="callback",
                status=DeliveryStatus.FAILED,
                attempts=8,
                last_error="503 from the endpoint, gave up",
            )
        )
    posts_before = len(stack["destination"].posts)
    sign_in(page)
    page.goto("/console/deliveries")
    failed = page.locator("#failed tr", has_text="503 from the endpoint")
    assert failed.count() == 1
    shot(page, "deliveries-failed")
    failed.locator("button", has_text="Redeliver").click()
    assert "queued again" in page.inner_text(".flash")
    wait_until(lambda: len(stack["destination"].posts) > posts_before, timeout=45)
    page.goto(f"/console/deliveries?event={event_id}")
    reload_until(page, "#all", "delivered")
    assert page.locator("#all tr", has_text="sink").count() == 1
    shot(page, "deliveries-redelivered")
    page.goto(f"/console/events/{event_id}")
    assert "sink" in page.inner_text("main")
    shot(page, "event-deliveries")


def test_redeliver_a_failed_alert_delivery(page, stack) -> None:
    alert_id = str(uuid.uuid4())
    with stack["store"].session() as session:
        session.add(
            Alert(
                id=alert_id,
                cause_key=f"test:{alert_id}",
                severity="error",
                title="Recording missing for c-browser",
                text="The recording never appeared.",
                conversation_id="c-browser",
                facts={},
                raised_at=datetime.now(UTC),
            )
        )
        session.flush()
        session.add(
            AlertDelivery(
                alert_id=alert_id,
                channel="log",
                status=DeliveryStatus.FAILED,
                attempts=0,
                last_error="log channel was down",
            )
        )
    sign_in(page)
    page.goto("/console/deliveries")
    failed = page.locator("#failed-alerts tr", has_text="log channel was down")
    assert failed.count() == 1
    shot(page, "deliveries-failed-alert")
    failed.locator("button", has_text="Redeliver").click()
    assert "queued again" in page.inner_text(".flash")

    def delivered() -> bool:
        page.reload()
        return page.locator("#failed-alerts tr", has_text="log channel was down").count() == 0

    wait_until(delivered, timeout=45, interval=1)
    page.goto("/console/alerts")
    assert "Recording missing for c-browser" in page.inner_text("#alerts")
    reload_until(page, "#alerts", "delivered")
    shot(page, "alerts")


def test_a_payload_with_script_does_not_run(page, stack) -> None:
    sink = stack["sink"]
    evil = f"http://127.0.0.1:{sink.port}"
    body = fixture_json("transcription_ready") | {"conversation_id": "c-hostile"}
    body["properties"]["transcript"] = [
        {"role": "user", "content": f"<script>alert('x');fetch('{evil}/script')</script>"},
        {"role": "assistant", "content": f'<img src="{evil}/img" onerror="alert(1)">'},
        {"role": "user", "content": f'"><svg onload="fetch(\'{evil}/svg\')">'},
    ]
    post(stack, body)
    dialogs: list[str] = []
    requested: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requested.append(request.url))
    sign_in(page)
    page.goto("/console/conversations/c-hostile")
    reload_until(page, "#transcript", "<script>")
    page.wait_for_timeout(1500)  # time for anything that would run to run
    turns = page.locator("#transcript .turn p").all_inner_texts()
    assert turns[0] == f"<script>alert('x');fetch('{evil}/script')</script>"  # shown as text
    assert page.locator("#transcript script, #transcript img, #transcript svg").count() == 0
    shot(page, "conversation-hostile")
    event_link = page.locator("#timeline a").first
    event_link.click()
    page.wait_for_timeout(1000)
    shot(page, "event-hostile")
    assert dialogs == []
    assert sink.hits == []
    assert not [url for url in requested if str(sink.port) in url]


def test_the_charts_and_a_resource_id_on_the_events_page(page, stack) -> None:
    """A person opens Charts from the menu and sees each chart drawn and named in words; the
    events page names a replica event's replica and leads to it."""
    for body in conversation_lifecycle("c-charts"):
        post(stack, body)
    post(stack, {"replica_id": "r-charts-browser", "status": "ready"})
    sign_in(page)
    page.goto("/console/events?kind=replica")
    reload_until(page, "#events", "r-charts-browser")
    page.click("#events a.resource-link:text('r-charts-browser')")
    assert page.url.endswith("/console/replicas/r-charts-browser")

    page.goto("/console/")
    page.click("header nav a:text('Charts')")
    reload_until(page, "#deliveries", "% delivered")
    for chart in ("#events-per-minute", "#latency", "#deliveries", "#queue-depth"):
        drawn = page.locator(f"{chart} svg").first
        box = drawn.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 10, chart
        assert drawn.get_attribute("role") == "img" and drawn.get_attribute("aria-label")
    minutes = page.inner_text("#events-per-minute")
    assert "processed" in minutes and "events, at most" in minutes  # words, not only colour
    assert page.locator("#events-per-minute svg.series-processed rect").count() >= 1
    assert page.locator("#latency svg rect.p50").count() >= 1
    assert "sink" in page.inner_text("#deliveries")
    shot(page, "charts")


@pytest.fixture(autouse=True, scope="module")
def _artifacts_folder() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
