"""The intake's error vocabulary: each error knows its HTTP status and a stable code."""

from __future__ import annotations


class IntakeError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(IntakeError):
    status = 401
    code = "unauthorized"


class BadSignature(IntakeError):
    status = 401
    code = "bad_signature"


class NotJSONObject(IntakeError):
    status = 400
    code = "invalid_json"


class BadKind(IntakeError):
    status = 400
    code = "unknown_kind"


class QueueUnavailable(IntakeError):
    status = 503
    code = "queue_unavailable"


class ForbiddenSource(IntakeError):
    status = 403
    code = "forbidden_source"


class BodyTimeout(IntakeError):
    status = 408
    code = "request_timeout"
