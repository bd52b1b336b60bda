"""Which callback a body is, whether it is valid, and the key that makes a repeat a repeat.

Tavus sends no type field and points every resource's ``callback_url`` wherever the user says,
so the kind is read from the body's shape; ``?kind=`` in the URL overrides the guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import tolerant
from .callbacks import KIND_TABLE, kinds
from .callbacks.keys import content_key

MAX_KEY_LENGTH = 255


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
    """The first kind whose rule takes the body (``KIND_TABLE``'s order), or None."""
    return next(
        (name for name, kind in KIND_TABLE.items() if kind.matches and kind.matches(body)), None
    )


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
    if hint is not None and hint not in KIND_TABLE:
        raise UnknownKind(f"kind must be one of {', '.join(kinds())}")
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
    return Verdict(
        kind,
        event_type,
        conversation_id,
        key,
        None,
        repeat_window=table.repeat_window,
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
