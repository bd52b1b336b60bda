"""The tolerant reader: take what a body holds, note what deviates from the documented shape.

Tavus renames fields, changes types and documents its examples loosely. A body whose identity
loads (a conversation callback's ``conversation_id`` and ``event_type``, a video's ``video_id``)
is taken: the values that fail their field are left out, required fields may be missing, and
every deviation becomes a warning, keyed by its path (``properties.shutdown_reason``). Only a
body whose identity does not load is refused, with the schema's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError

from . import fastload

# Each round leaves out what failed in the one before; deviations nested in a value that is
# itself left out need a round more. Three covers an envelope, its properties and their entries.
_ROUNDS = 3
_LEAVE_OUT = object()


@dataclass(frozen=True)
class Reading:
    data: dict[str, Any] | None  # the body as loaded; None: refused
    warnings: dict[str, list[str]] | None = None  # path -> messages, for what was left out
    errors: dict[str, Any] | None = None  # set when refused: the schema's messages


def read(schema: Schema, body: Any, identity: tuple[str, ...]) -> Reading:
    """Load ``body`` strictly; failing that, leniently, unless ``identity`` fails."""
    try:
        return Reading(fastload.load(schema, body))
    except ValidationError as exc:
        messages = exc.messages
    if not isinstance(body, dict) or not isinstance(messages, dict):
        return Reading(None, errors=_as_dict(messages))
    if any(name in messages for name in identity):
        return Reading(None, errors=_as_dict(messages))
    warnings: dict[str, list[str]] = {}
    current: Any = body
    for _ in range(_ROUNDS):
        warnings.update(_flatten(messages))
        current = _leave_out(current, messages)
        if current is _LEAVE_OUT:
            break
        try:
            return Reading(schema.load(current, partial=True), warnings)
        except ValidationError as exc:
            messages = exc.messages
            if not isinstance(messages, dict):
                break
    return Reading(None, errors=_as_dict(messages))


def _leave_out(value: Any, messages: Any) -> Any:
    """``value`` without the parts ``messages`` (marshmallow's, keyed like it) found wrong."""
    if not isinstance(messages, dict):
        return _LEAVE_OUT  # the value itself is wrong (a type, a missing field)
    if "_schema" in messages and not isinstance(value, dict):
        return _LEAVE_OUT  # not even the right type
    # A rule across fields ("_schema" of an object) is not checked on the lenient pass.
    if isinstance(value, dict):
        kept = dict(value)
        for key, inner in messages.items():
            if key in kept:
                part = _leave_out(kept[key], inner)
                if part is _LEAVE_OUT:
                    del kept[key]
                else:
                    kept[key] = part
        return kept
    if isinstance(value, list):
        kept_items = []
        for index, item in enumerate(value):
            part = _leave_out(item, messages[index]) if index in messages else item
            if part is not _LEAVE_OUT:
                kept_items.append(part)
        return kept_items
    return _LEAVE_OUT


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    if not isinstance(messages, dict):
        items = messages if isinstance(messages, list) else [messages]
        return {prefix or "_schema": [_text(item) for item in items]}
    flat: dict[str, list[str]] = {}
    for key, inner in messages.items():
        path = prefix if key == "_schema" and prefix else f"{prefix}.{key}" if prefix else str(key)
        flat.update(_flatten(inner, path))
    return flat


def _text(value: Any) -> str:
    # A message may quote the input, and no text column (nor jsonb) takes a NUL.
    return str(value).replace("\x00", "\ufffd")[:500]


def _as_dict(messages: Any) -> dict[str, Any]:
    """Marshmallow keys a list's errors by index (an int): JSON wants string keys."""
    return _string_keys(messages if isinstance(messages, dict) else {"_schema": messages})


def _string_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_string_keys(item) for item in value]
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    return value
