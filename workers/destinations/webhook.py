"""Forwarding to the user's own endpoint: Tavus's body, byte for byte, signed per Standard
Webhooks (standardwebhooks.com), so any handler written for Tavus works behind us unchanged.

Headers: ``webhook-id`` (our event id, the same on every retry: the receiver's idempotency key),
``webhook-timestamp`` (epoch seconds of this attempt), ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), and ours: ``tavus-event-kind``,
``tavus-event-type``, ``tavus-event-source`` (callback, reconciled, replay); with tracing on
(docs/tracing.md), ``traceparent``: the user's own tracing continues the callback's trace.

2xx is delivered; timeouts, refused connections, 408, 425, 429 and 5xx are retried (honouring
``Retry-After``) for ``FORWARD_RETRY_HOURS`` from the first attempt; a redirect is not followed
(it would send a signed body somewhere unlisted) and, like any other 4xx, fails at once.
"""

from __future__ import annotations

import time

import requests
from marshmallow import fields, validate

from schemas import tracing
from schemas.settings import (
    DestinationSettings,
    ForwardDestination,
    Settings,
    per_destination,
    webhook_secret,
    webhook_secret_key,
)
from schemas.times import retry_after
from workers.alerts.notifiers.http import RETRYABLE_STATUSES
from workers.alerts.notifiers.webhook import sign
from workers.errors import Permanent, Transient

from .base import Answer, ForwardedEvent, UrlDestination, with_answer

EXCERPT_BYTES = 500  # of each reply, kept with the attempt


class WebhookDestination(UrlDestination):
    settings = DestinationSettings(
        "webhook",
        ("http", "https"),
        (
            per_destination(
                "SECRET",
                fields.String(
                    required=True,
                    validate=webhook_secret,
                    error_messages={"required": "required to sign the destination's requests"},
                ),
                None,
                "Standard Webhooks secret of an `http(s)://` destination, `whsec_` + base64 of 24 "
                "to 64 random bytes",
                secret=True,
            ),
        ),
        url=validate.URL(schemes={"http", "https"}, require_tld=False),
    )

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        self._url = config.url
        self._key = webhook_secret_key(self.options["secret"])

    def headers(self, event: ForwardedEvent, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(self._key, event.id, timestamp, body),
            "tavus-event-kind": event.kind or "",
            "tavus-event-type": event.event_type or "",
            "tavus-event-source": event.source,
        }
        # The delivery's span, as `traceparent`: the user's own tracing continues the trace.
        tracing.inject(headers)
        return headers

    def deliver(self, event: ForwardedEvent) -> Answer:
        body = event.raw.encode("utf-8")
        try:
            response = requests.post(
                self._url,
                data=body,
                headers=self.headers(event, body),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise Transient(f"no answer from {self.host} within {self._timeout:g}s") from None
        except requests.ConnectionError:
            raise Transient(f"could not connect to {self.host}") from None
        except requests.RequestException as exc:  # the URL's own text may hold a credential
            raise Permanent(f"request to {self.host} failed: {type(exc).__name__}") from None
        status = response.status_code
        answer = Answer(status, response.content[:EXCERPT_BYTES].decode(errors="replace"))
        if 200 <= status < 300:
            return answer
        problem = f"HTTP {status} from {self.host}"
        if status in RETRYABLE_STATUSES or status >= 500:
            raise with_answer(Transient(problem, retry_after=_retry_after(response)), answer)
        if 300 <= status < 400:
            problem += " (a redirect: not followed; point FORWARD_<NAME>_URL at the final URL)"
        raise with_answer(Permanent(problem), answer)


def _retry_after(response: requests.Response) -> float | None:
    return retry_after(response.headers.get("Retry-After"))
