"""One JSON POST, with its failures mapped onto transient and permanent delivery errors.

Errors name the host only: a Slack incoming-webhook URL is itself the credential, and a generic
webhook URL may carry a token in its path or query.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import requests

from schemas.times import retry_after

from .base import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

# Statuses worth another try: timeouts, "too early", throttling, and server errors.
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_REPLY_EXCERPT = 200


def post_json(url: str, body: bytes, timeout: float, headers: dict[str, str] | None = None) -> None:
    """POST ``body`` to ``url``; return on 2xx, raise a ``DeliveryError`` otherwise."""
    host = urlsplit(url).hostname or "the endpoint"
    try:
        response = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=timeout,
            allow_redirects=False,  # a redirect would re-send a signed body somewhere unlisted
        )
    except requests.Timeout:
        raise TransientDeliveryError(f"no answer from {host} within {timeout:g}s") from None
    except requests.ConnectionError:
        raise TransientDeliveryError(f"could not connect to {host}") from None
    except requests.RequestException as exc:
        raise PermanentDeliveryError(f"request to {host} failed: {type(exc).__name__}") from None
    if 200 <= response.status_code < 300:
        return
    reply = " ".join(response.text[:MAX_REPLY_EXCERPT].split())
    problem = f"HTTP {response.status_code} from {host}" + (f": {reply}" if reply else "")
    if response.status_code in RETRYABLE_STATUSES or response.status_code >= 500:
        raise TransientDeliveryError(
            problem, retry_after=retry_after(response.headers.get("Retry-After"))
        )
    raise PermanentDeliveryError(problem)
