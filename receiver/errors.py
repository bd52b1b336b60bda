"""The intake's error vocabulary: each error knows its HTTP status and a stable code."""

from __future__ import annotations

from typing import ClassVar


class IntakeError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init_subclass__(cls, status: int, code: str) -> None:
        cls.status, cls.code = status, code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(IntakeError, status=401, code="unauthorized"):
    """No URL token, or not one of CALLBACK_TOKENS."""


class BadSignature(IntakeError, status=401, code="bad_signature"):
    """An X-Tavus-Signature that none of TAVUS_SIGNING_SECRETS verifies."""


class NotJSONObject(IntakeError, status=400, code="invalid_json"):
    """A body that is not one JSON object."""


class BadKind(IntakeError, status=400, code="unknown_kind"):
    """A JSON object no callback kind recognises."""


class QueueUnavailable(IntakeError, status=503, code="queue_unavailable"):
    """Neither Redis nor the spool could take the callback: Tavus should send it again."""


class ForbiddenSource(IntakeError, status=403, code="forbidden_source"):
    """A sender outside ALLOWED_SOURCE_CIDRS."""


class BodyTimeout(IntakeError, status=408, code="request_timeout"):
    """The body did not arrive within BODY_TIMEOUT_SECONDS."""
