"""Which callback a body is, whether it is valid, and the key that makes a repeat a repeat.

Tavus sends no type field and points every resource's ``callback_url`` wherever the user says,
so the kind is read from the body's shape; ``?kind=`` in the URL overrides the guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import tolerant
from .callbacks import KIND_TABLE, KINDS
from .callbacks.keys import content_key
from .callbacks.tool import TOOL, is_tool_delivery

# Guardrail callbacks carry neither a timestamp nor an id, and one guardrail may trigger several
# times in a conversation. An identical body within this many seconds of the first is taken as
# the same delivery sent twice; later, the same trigger counts again.
GUARDRAIL_REPEAT_WINDOW_SECONDS = 10
MAX_KEY_LENGTH = 255


def _is_objective(body: dict[str, Any]) -> bool:
    properties = body.get("properties")
    nested = isinstance(properties, dict) and "objective_name" in properties
    # Never str() a payload value: a list nested a thousand deep overflows the stack.
    event_type = body.get("event_type")
    named = isinstance(event_type, str) and "objective" in event_type
    return "objective_name" in body or nested or named


def _is_guardrail(body: dict[str, Any]) -> bool:
    properties = body.get("properties")
    nested = isinstance(properties, dict) and "guardrail" in properties
    return "conversation_id" in body and (nested or "guardrail" in body)


# First match wins: the order is part of the contract (an objective also has an event_type).
KIND_RULES: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = (
    ("objective", _is_objective),
    (TOOL, is_tool_delivery),
    ("conversation", lambda body: "event_type" in body and "conversation_id" in body),
    ("guardrail", _is_guardrail),
    ("video", lambda body: "video_id" in body),
    ("document", lambda body: "document_id" in body),
    ("replica", lambda body: "replica_id" in body and "status" in body),
)


class UnknownKind(ValueError):
    """``?kind=`` named a kind we do not have."""


@dataclass(frozen=True)
class Verdict:
    kind: str | None
    event_type: str | None
    conversation_id: str | None
    event_key: str
    errors: dict[str, Any] | None  # None: a Tavus callback (its identity loads)
    # Set when equal keys may be distinct events later on (guardrails): the key then marks a
    # repeat only within this many seconds, and each stored event gets a key of its own.
    repeat_window: int | None = None
    # What deviated from the documented shape (the tolerant reader took the rest), by path.
    warnings: dict[str, list[str]] | None = None

    @property
    def valid(self) -> bool:
        return self.errors is None


def guess_kind(body: dict[str, Any]) -> str | None:
    return next((kind for kind, matches in KIND_RULES if matches(body)), None)


def classify(
    body: dict[str, Any],
    raw: bytes,
    hint: str | None = None,
    deep: bool = False,
) -> Verdict:
    """Classify and validate one parsed body; ``raw`` is the exact bytes, for content keys.

    By default as the receiver does, fast: every field but a transcript's entries, which the
    worker loads (``deep=True`` checks them here too).
    """
    if hint is not None and hint not in KINDS:
        raise UnknownKind(f"kind must be one of {', '.join(KINDS)}")
    kind = hint or guess_kind(body)
    event_type = _text(body.get("event_type"))
    conversation_id = _text(body.get("conversation_id"))
    if kind is None:
        errors = {"_schema": ["Not a Tavus callback: no known shape matches this body."]}
        return Verdict(None, event_type, conversation_id, content_key(raw), errors)
    table = KIND_TABLE[kind]
    reading = tolerant.read(table.schema if deep else table.intake, body, table.identity)
    if reading.data is None:
        return Verdict(kind, event_type, conversation_id, content_key(raw), reading.errors)
    # A tool delivery may name its conversation under properties only (loaded flat).
    conversation_id = conversation_id or _text(reading.data.get("conversation_id"))
    key = _bounded(event_key(kind, reading.data, raw))
    window = GUARDRAIL_REPEAT_WINDOW_SECONDS if kind == "guardrail" else None
    return Verdict(
        kind,
        event_type,
        conversation_id,
        key,
        None,
        repeat_window=window,
        warnings=reading.warnings,
    )


def event_key(kind: str, data: dict[str, Any], raw: bytes) -> str:
    """The identity of one event, by its kind's key function (``KIND_TABLE``); the bytes when
    the fields the function needs are missing (the tolerant reader may have left them out)."""
    try:
        return KIND_TABLE[kind].key(data, raw)
    except (KeyError, TypeError, AttributeError):
        return content_key(raw)


def _bounded(key: str) -> str:
    """Ids come from the payload: keep a key short enough for any unique index."""
    return key if len(key) <= MAX_KEY_LENGTH else content_key(key.encode())


def _text(value: Any) -> str | None:
    """An id worth indexing: a short, non-empty string that a text column can hold."""
    usable = isinstance(value, str) and 0 < len(value) <= MAX_KEY_LENGTH and "\x00" not in value
    return value if usable else None
