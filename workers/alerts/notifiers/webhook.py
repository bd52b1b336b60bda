"""A generic webhook: the alert as JSON, signed per the Standard Webhooks spec.

Headers ``webhook-id`` (one id per alert, the same on every retry, so the receiver can drop a
repeat), ``webhook-timestamp`` (epoch seconds of this attempt, so it can refuse a replay) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the
bytes of the ``whsec_<base64>`` secret. Any Standard Webhooks library verifies it
(``standardwebhooks.Webhook(secret).verify(body, headers)``). See standardwebhooks.com.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson

from schemas.settings import Settings, webhook_secret_key

from .base import Alert
from .http import post_json

EVENT_TYPE = "alert.raised"


class WebhookNotifier:
    channel = "webhook"

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self._url = url
        self._key = webhook_secret_key(secret)
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookNotifier | None:
        if not (settings.alert_webhook_url and settings.alert_webhook_secret):
            return None
        return cls(
            settings.alert_webhook_url,
            settings.alert_webhook_secret,
            settings.alert_timeout_seconds,
        )

    def send(self, alert: Alert) -> None:
        body = orjson.dumps(
            {"type": EVENT_TYPE, "timestamp": alert.raised_at.isoformat(), "data": alert.as_json()}
        )
        message_id = webhook_id(alert)
        timestamp = str(int(time.time()))
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(self._key, message_id, timestamp, body),
        }
        post_json(self._url, body, self._timeout, headers)


def webhook_id(alert: Alert) -> str:
    return f"msg_{alert.alert_id.replace('-', '')}"


def sign(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")
