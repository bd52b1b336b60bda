"""The one Tavus API call we make: a conversation with its events (``?verbose=true``).

Used by reconciliation to recover what callbacks never delivered. The API key travels in the
``x-api-key`` header only; no message, log line or exception here ever includes it.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests

from schemas.times import retry_after
from workers import errors

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0


class TavusAPIError(Exception):
    """The API refused the request for good (a bad key, a bad request): do not retry soon."""


class ConversationNotFound(TavusAPIError, errors.Permanent):
    """Tavus does not know this conversation (deleted, or another account's)."""


class TavusUnavailable(TavusAPIError, errors.Transient):
    """Throttled (429), failing (5xx) or unreachable: try again later, after ``retry_after``."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TavusAPI:
    def __init__(self, base_url: str, api_key: str, timeout: float = TIMEOUT_SECONDS) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["x-api-key"] = api_key

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """``GET /v2/conversations/{id}?verbose=true``: the conversation and its ``events``."""
        url = f"{self._base_url}/v2/conversations/{quote(conversation_id, safe='')}"
        try:
            response = self._session.get(url, params={"verbose": "true"}, timeout=self._timeout)
        except requests.RequestException as exc:
            # The exception's text names the URL (never the headers); keep only its type.
            raise TavusUnavailable(f"Tavus API unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            raise TavusUnavailable(f"Tavus API answered {status}", wait)
        if status == 404:
            raise ConversationNotFound(f"Tavus has no conversation {conversation_id}")
        if status >= 400:
            raise TavusAPIError(f"Tavus API answered {status} (is TAVUS_API_KEY right?)")
        try:
            body = response.json()
        except ValueError:
            raise TavusUnavailable("Tavus API answered with something not JSON") from None
        if not isinstance(body, dict):
            raise TavusUnavailable("Tavus API answered with JSON that is not an object")
        return body

    def close(self) -> None:
        self._session.close()
