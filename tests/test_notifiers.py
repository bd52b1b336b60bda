"""Each notifier against a real stand-in: an HTTP server for Slack and the webhook, aiosmtpd for
email (plain, STARTTLS with a login, implicit TLS). What a receiver sees, and how each failure
is classed: worth a retry, or not."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.services import free_port
from tests.sinks import HttpSink, SmtpSink, TLSFiles
from workers.alerts.notifiers import (
    Alert,
    PermanentDeliveryError,
    TransientDeliveryError,
    notifier_for,
)
from workers.alerts.notifiers.email import EmailNotifier
from workers.alerts.notifiers.slack import SlackNotifier
from workers.alerts.notifiers.webhook import WebhookNotifier

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SLACK_PATH = "/services/T0001/B0001/sekr3tSlackToken"

ALERT = Alert(
    alert_id="0b0e6c1e-3b8f-4c43-9d0b-5d1d0c7e9f10",
    cause_key="recording_copy_failed:c123456",
    severity="critical",
    title="Recording copy failed for conversation c123456",
    text="Tavus could not copy it.\n\nLikely causes:\n• IAM trust policy mismatch\n\n"
    "Recovery deadline: 2025-08-10 06:50 UTC. <!channel> & friends",
    conversation_id="c123456",
    event_id="e-1",
    facts={
        "provider": "gcs",
        "recovery_deadline": "2025-08-10T06:50:01.100000+00:00",
        "likely_causes": ["IAM trust policy mismatch"],
    },
    raised_at=datetime(2025, 7, 11, 6, 50, 2, tzinfo=UTC),
)


@pytest.fixture
def sink():
    server = HttpSink().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TLSFiles:
    return TLSFiles(tmp_path_factory.mktemp("tls"))


def test_slack_gets_a_readable_block_kit_message(sink: HttpSink) -> None:
    SlackNotifier(sink.url + SLACK_PATH, timeout=5).send(ALERT)
    [request] = sink.received
    assert request.path == SLACK_PATH
    message = request.json()
    assert message["text"] == "CRITICAL: Recording copy failed for conversation c123456"
    header, *sections, fields, context = message["blocks"]
    assert header["type"] == "header"
    assert header["text"]["text"].startswith(":rotating_light: CRITICAL: Recording copy failed")
    assert [s["text"]["text"].split("\n")[0] for s in sections] == [
        "Tavus could not copy it.",
        "Likely causes:",
        "Recovery deadline: 2025-08-10 06:50 UTC. &lt;!channel&gt; &amp; friends",  # no ping
    ]
    assert [f["text"] for f in fields["fields"]] == [
        "*Provider*\ngcs",
        "*Recovery deadline*\n2025-08-10T06:50:01.100000+00:00",
    ]
    assert "recording_copy_failed:c123456" in context["elements"][0]["text"]


def test_webhook_is_signed_per_standard_webhooks(sink: HttpSink) -> None:
    notifier = WebhookNotifier(sink.url + "/hooks/alerts", SECRET, timeout=5)
    notifier.send(ALERT)
    notifier.send(ALERT)  # a retry of the same alert
    first, again = sink.received
    payload = Webhook(SECRET).verify(first.body, first.headers)  # the reference implementation
    assert payload["type"] == "alert.raised"
    assert payload["data"]["cause_key"] == "recording_copy_failed:c123456"
    assert payload["data"]["facts"]["likely_causes"] == ["IAM trust policy mismatch"]
    assert first.headers["content-type"] == "application/json"
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 60
    assert first.headers["webhook-id"] == again.headers["webhook-id"]  # receivers can dedupe
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(first.body.replace(b"c123456", b"c654321"), first.headers)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(first.body, first.headers)


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, TransientDeliveryError), (429, TransientDeliveryError), (404, PermanentDeliveryError)],
)
def test_http_failures_are_classed_and_name_no_secret(status: int, error: type) -> None:
    sink = HttpSink(always=status).start()
    sink.headers["Retry-After"] = "7"
    try:
        with pytest.raises(error) as caught:
            SlackNotifier(sink.url + SLACK_PATH, timeout=5).send(ALERT)
    finally:
        sink.stop()
    assert str(caught.value) == f"HTTP {status} from 127.0.0.1: no_service"
    if status == 429:
        assert caught.value.retry_after == 7


def test_a_dead_or_silent_endpoint_fails_fast_as_transient() -> None:
    dead = f"http://127.0.0.1:{free_port()}{SLACK_PATH}"
    started = time.monotonic()
    with pytest.raises(
        TransientDeliveryError, match=r"could not connect to 127\.0\.0\.1"
    ) as caught:
        SlackNotifier(dead, timeout=2).send(ALERT)
    assert SLACK_PATH not in str(caught.value)
    slow = HttpSink(delay=3).start()
    try:
        with pytest.raises(TransientDeliveryError, match=r"no answer from 127.0.0.1 within 0.5s"):
            WebhookNotifier(slow.url + "/h?token=abc", SECRET, timeout=0.5).send(ALERT)
    finally:
        slow.stop()
    assert time.monotonic() - started < 5


def test_email_over_plain_smtp_to_a_local_sink() -> None:
    smtp = SmtpSink().start()
    try:
        EmailNotifier(
            "127.0.0.1", "Tavus alerts <alerts@example.com>", ("ops@example.com",),
            security="none", port=smtp.port, timeout=5,
        ).send(ALERT)  # fmt: skip
    finally:
        smtp.stop()
    [mail] = smtp.received
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.message["Subject"] == "[CRITICAL] Recording copy failed for conversation c123456"
    assert mail.message["Message-ID"] == f"<{ALERT.alert_id}@tavus-callbacks>"
    body = mail.body()
    assert "Recovery deadline: 2025-08-10 06:50 UTC." in body
    assert "• IAM trust policy mismatch" in body
    assert "  Provider: gcs" in body


def test_email_over_starttls_with_a_login(tls: TLSFiles) -> None:
    smtp = SmtpSink("starttls", tls, password="s3cret-pass").start()

    def notifier(password: str) -> EmailNotifier:
        return EmailNotifier(
            "127.0.0.1", "alerts@example.com", ("ops@example.com", "oncall@example.com"),
            security="starttls", port=smtp.port, username=SmtpSink.USER, password=password,
            timeout=5, ssl_context=tls.client_context(),
        )  # fmt: skip

    try:
        notifier("s3cret-pass").send(ALERT)
        with pytest.raises(PermanentDeliveryError, match="refused the login") as caught:
            notifier("wrong-pass").send(ALERT)
    finally:
        smtp.stop()
    assert [mail.rcpt_tos for mail in smtp.received] == [["ops@example.com", "oncall@example.com"]]
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN) before it gives up.
    assert smtp.logins[0] == ("alerts", True)
    assert smtp.logins[1:] and not any(ok for _user, ok in smtp.logins[1:])
    assert "wrong-pass" not in str(caught.value)


def test_email_over_implicit_tls_verifies_the_certificate(tls: TLSFiles) -> None:
    smtp = SmtpSink("tls", tls).start()
    base = {"security": "tls", "port": smtp.port, "timeout": 5}
    try:
        EmailNotifier(
            "127.0.0.1", "alerts@example.com", ("ops@example.com",),
            ssl_context=tls.client_context(), **base,
        ).send(ALERT)  # fmt: skip
        with pytest.raises(PermanentDeliveryError, match="not trusted"):
            EmailNotifier("127.0.0.1", "alerts@example.com", ("ops@example.com",), **base).send(
                ALERT
            )
    finally:
        smtp.stop()
    assert len(smtp.received) == 1


def test_email_to_a_dead_server_is_transient() -> None:
    notifier = EmailNotifier(
        "127.0.0.1", "alerts@example.com", ("ops@example.com",), security="none",
        port=free_port(), timeout=2,
    )  # fmt: skip
    with pytest.raises(TransientDeliveryError, match="unreachable"):
        notifier.send(ALERT)


def test_only_configured_channels_have_a_notifier() -> None:
    from schemas.settings import Settings

    bare = Settings()
    assert notifier_for("log", bare) is not None
    assert [notifier_for(c, bare) for c in ("slack", "webhook", "email", "pager")] == [None] * 4
    full = Settings.from_env(
        {
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com" + SLACK_PATH,
            "ALERT_WEBHOOK_URL": "https://example.com/hooks",
            "ALERT_WEBHOOK_SECRET": SECRET,
            "SMTP_HOST": "smtp.example.com",
            "ALERT_EMAIL_FROM": "alerts@example.com",
            "ALERT_EMAIL_TO": "ops@example.com",
        }
    )
    email = notifier_for("email", full)
    assert (email.host, email.port, email.security) == ("smtp.example.com", 587, "starttls")
    assert all(notifier_for(c, full) for c in ("slack", "webhook"))
