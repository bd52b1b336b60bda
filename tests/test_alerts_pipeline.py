"""Alerts end to end: callbacks posted to the receiver, a real Celery worker, real sinks for
Slack (HTTP), the signed webhook (HTTP) and email (aiosmtpd over STARTTLS with a login).

What a user notices: one message per channel per cause, whatever is repeated, with the
deadline and the causes in it; a broken channel costs only itself; secrets stay out of logs."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from schemas.messages import (
    ALERTS_QUEUE,
    EVENTS_QUEUE,
    PROCESS_EVENT,
    RAISE_ALERT,
    AlertMessage,
    EventMessage,
    celery_envelope,
)
from schemas.settings import Settings
from tests.helpers import TOKEN, fixture, fixture_json, worker_env
from tests.services import Worker, base_env, free_port, wait_until
from tests.sinks import HttpSink, SmtpSink, TLSFiles
from workers import queries
from workers.store.db import Store
from workers.store.models import Event

pytestmark = pytest.mark.integration

URL = f"/callbacks/{TOKEN}"
SLACK_PATH = "/services/T0001/B0001/slackTokenNeverLogged"
HOOK_TOKEN = "hookTokenNeverLogged"
SMTP_PASSWORD = "smtpPasswordNeverLogged"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SECRETS = (SLACK_PATH.rsplit("/", 1)[1], HOOK_TOKEN, SMTP_PASSWORD, SECRET, SECRET[6:])


class Alerting:
    """The receiver, a worker configured with all three channels, and the sinks behind them."""

    def __init__(self, redis_url: str, store: Store, tmp_path: Path, **env: str) -> None:
        self.store = store
        self.redis = redis.Redis.from_url(redis_url)
        self.slack, self.webhook = HttpSink().start(), HttpSink().start()
        tls = TLSFiles(tmp_path)
        self.smtp = SmtpSink("starttls", tls, password=SMTP_PASSWORD).start()
        settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=store.url)
        self.metrics_port = free_port()
        self.env = worker_env(
            settings,
            WORKER_METRICS_PORT=str(self.metrics_port),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker-metrics"),
            SLACK_WEBHOOK_URL=self.slack.url + SLACK_PATH,
            ALERT_WEBHOOK_URL=f"{self.webhook.url}/alerts?token={HOOK_TOKEN}",
            ALERT_WEBHOOK_SECRET=SECRET,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(self.smtp.port),
            SMTP_SECURITY="starttls",
            SMTP_USERNAME=SmtpSink.USER,
            SMTP_PASSWORD=SMTP_PASSWORD,
            ALERT_EMAIL_FROM="Tavus alerts <alerts@example.com>",
            ALERT_EMAIL_TO="ops@example.com",
            SSL_CERT_FILE=str(tls.ca_file),  # the sink's private CA, trusted by ssl's defaults
            **env,
        )
        self.log = tmp_path / "worker.log"
        self.worker = Worker(self.env, self.log).start()
        from receiver import create_app

        self.client = create_app(settings).test_client()

    def stop(self) -> None:
        self.worker.stop()
        self.slack.stop()
        self.webhook.stop()
        self.smtp.stop()
        self.redis.close()

    def post(self, body: bytes | dict) -> dict:
        response = self.client.post(
            URL, data=body if isinstance(body, bytes) else orjson.dumps(body)
        )
        assert response.status_code in (200, 202), response.json
        return response.json

    def enqueue(self, task: str, queue: str, argument: dict) -> None:
        """Publish a task as the receiver does: a Celery redelivery, or another task's send."""
        self.redis.lpush(queue, celery_envelope(task, str(uuid.uuid4()), [argument], queue))

    def count(self, task: str, what: str) -> int:
        """How many times the worker logged ``task`` as received, succeeded or retry."""
        pattern = rf"Task {re.escape(task)}\[[^\]]+\] {what}"
        return len(re.findall(pattern, self.log.read_text()))

    def idle(self, task: str) -> bool:
        """Every ``task`` the worker took has ended (retries are taken again)."""
        done = self.count(task, "succeeded") + self.count(task, "retry")
        return self.count(task, "received") == done

    def alerts_raised(self) -> dict[str, float]:
        """``tavus_callbacks_alerts_raised_total`` by severity, as the worker exposes it."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return {
            sample.labels["severity"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "tavus_callbacks_alerts_raised_total"
        }

    def alerts(self) -> dict[str, dict]:
        with self.store.session() as session:
            return {row["cause_key"]: row for row in queries.recent_alerts(session)}

    def cli(self, *args: str) -> str:
        env = base_env(DATABASE_URL=self.store.url)
        command = [sys.executable, "-m", "cli.main", "alerts", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def alerting(redis_url: str, store: Store, tmp_path: Path) -> Iterator[Alerting]:
    running = Alerting(redis_url, store, tmp_path)
    yield running
    running.stop()


def delivered_everywhere(alerting: Alerting, cause_key: str) -> bool:
    row = alerting.alerts().get(cause_key)
    return (
        bool(row)
        and len(row["deliveries"]) == 4
        and all(d["status"] == "delivered" for d in row["deliveries"])
    )


def test_copy_failed_reaches_each_channel_once_with_deadline_and_causes(alerting) -> None:
    cause = "recording_copy_failed:c123456"
    first = alerting.post(fixture("recording_copy_failed"))
    assert alerting.post(fixture("recording_copy_failed"))["status"] == "duplicate"
    wait_until(lambda: delivered_everywhere(alerting, cause), timeout=30)
    later = fixture_json("recording_copy_failed") | {"timestamp": "2025-07-11T07:20:00Z"}
    assert alerting.post(later)["status"] == "accepted"  # Tavus says it again: the same cause

    # Celery redelivers the event's message, and the raise task runs for the same cause (as
    # another sender would send it).
    with alerting.store.session() as session:
        event = session.get(Event, first["event_id"])
        message = EventMessage(
            event_id=event.id, event_key=event.event_key, kind=event.kind,
            event_type=event.event_type, conversation_id=event.conversation_id,
            received_at=event.received_at.timestamp(), body=event.body, errors=None,
            source="callback",
        )  # fmt: skip
    alerting.enqueue(PROCESS_EVENT, EVENTS_QUEUE, message)
    alert = alerting.alerts()[cause]
    alerting.enqueue(RAISE_ALERT, ALERTS_QUEUE, AlertMessage(
        cause_key=cause, severity="critical", title=alert["title"], text=alert["text"],
        conversation_id="c123456", event_id=first["event_id"], facts=alert["facts"],
    ))  # fmt: skip
    # Three events processed (their alerts raised with them), one raise task, and whatever
    # deliveries they asked for.
    wait_until(lambda: alerting.count(PROCESS_EVENT, "succeeded") >= 3, timeout=30)
    wait_until(lambda: alerting.count(RAISE_ALERT, "succeeded") >= 1, timeout=30)
    wait_until(lambda: alerting.idle("tavus.alerts.deliver"), timeout=30)
    # Each raise counted: the two events' (the redelivery raised nothing) and the task's.
    assert alerting.alerts_raised() == {"critical": 3.0}

    [slack] = alerting.slack.received
    [hook] = alerting.webhook.received
    [mail] = alerting.smtp.received
    deadline = "Recovery deadline: 2025-08-10 06:50 UTC"
    causes = ("IAM trust policy mismatch", "Federated credential drift", "Bucket region typo")

    slack_text = json.dumps(slack.json())
    assert slack.json()["text"] == "CRITICAL: Recording copy failed for conversation c123456"
    assert deadline in slack_text and all(c in slack_text for c in causes)

    payload = Webhook(SECRET).verify(hook.body, hook.headers)
    assert hook.path == f"/alerts?token={HOOK_TOKEN}"
    assert payload["data"]["cause_key"] == cause
    assert payload["data"]["facts"]["recovery_deadline"] == "2025-08-10T06:50:01.100000+00:00"
    assert payload["data"]["facts"]["error_code"] == "ACCESS_DENIED"
    assert deadline in payload["data"]["text"]

    assert mail.message["Subject"] == "[CRITICAL] Recording copy failed for conversation c123456"
    assert mail.rcpt_tos == ["ops@example.com"]
    assert deadline in mail.body() and all(c in mail.body() for c in causes)
    assert alerting.smtp.logins == [("alerts", True)]

    listed = json.loads(alerting.cli("--json"))
    assert [a["cause_key"] for a in listed] == [cause]
    assert {d["channel"]: (d["status"], d["attempts"]) for d in listed[0]["deliveries"]} == {
        channel: ("delivered", 1) for channel in ("log", "slack", "webhook", "email")
    }
    text = alerting.cli()
    assert "CRITICAL  Recording copy failed for conversation c123456" in text
    assert "recover before 2025-08-10 06:50 UTC" in text
    seen = alerting.log.read_text() + text + json.dumps(listed)
    assert "ALERT CRITICAL [recording_copy_failed:c123456]" in seen  # the log channel
    assert [s for s in SECRETS if s in seen] == []


def test_a_failing_channel_costs_only_itself(redis_url, sqlite_url, tmp_path) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    alerting = Alerting(redis_url, store, tmp_path, ALERT_DELIVERY_ATTEMPTS="3")
    alerting.slack.always = 500  # Slack is down for good
    alerting.webhook.statuses = [503]  # the webhook fails once
    try:
        alerting.post(fixture("video_error"))
        # Another task (recording verification) raises its own alert through the contract.
        alerting.enqueue(RAISE_ALERT, ALERTS_QUEUE, AlertMessage(
            cause_key="recording_missing:c77", severity="error",
            title="Recording of conversation c77 not found", text="Nothing at s3://b/k.",
            conversation_id="c77", event_id=None, facts={"uri": "s3://b/k"},
        ))  # fmt: skip

        def settled() -> dict | None:
            rows = alerting.alerts()
            statuses = [d["status"] for row in rows.values() for d in row["deliveries"]]
            done = len(statuses) == 8 and {"pending", "sending"}.isdisjoint(statuses)
            return rows if done else None

        rows = wait_until(settled, timeout=60)
    finally:
        alerting.stop()
        store.dispose()
    assert set(rows) == {"video_failed:2f5a1c9d3e", "recording_missing:c77"}
    for row in rows.values():
        by_channel = {d["channel"]: d for d in row["deliveries"]}
        assert by_channel["slack"]["status"] == "failed"
        assert [a["outcome"] for a in by_channel["slack"]["history"]] == [
            "retrying", "retrying", "failed",
        ]  # fmt: skip
        assert by_channel["email"]["status"] == by_channel["log"]["status"] == "delivered"
        assert by_channel["webhook"]["status"] == "delivered"
    assert len(alerting.slack.received) == 6
    assert len(alerting.webhook.accepted()) == 2 and len(alerting.webhook.received) == 3
    subjects = sorted(mail.message["Subject"] for mail in alerting.smtp.received)
    assert subjects == [
        "[ERROR] Recording of conversation c77 not found",
        "[ERROR] Video 2f5a1c9d3e (broken) failed to generate",
    ]
