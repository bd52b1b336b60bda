"""The base every callback schema shares, and the one date field for every date form Tavus uses."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

_EPOCH_TEXT = re.compile(r"-?\d{9,}(\.\d+)?")  # "1724858860.824457": no year has 9 digits
# Epoch values above this are milliseconds, not seconds (it is the year 33658 in seconds).
_EPOCH_MILLIS_ABOVE = 1e12


class TavusSchema(Schema):
    """Tavus adds fields without notice: keep every unknown field rather than fail or drop it."""

    class Meta:
        unknown = INCLUDE


def parse_tavus_datetime(value: Any) -> datetime:
    """Parse any date Tavus sends into an aware UTC datetime.

    Forms seen: ISO 8601 with ``Z`` or an offset (conversation events, documents),
    ``"2024-08-28 15:27:40.824457"`` with no zone (videos, taken as UTC), and epoch seconds (or
    milliseconds) as numbers or as strings (some transcript entries).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a date")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        seconds = value / 1000 if abs(value) > _EPOCH_MILLIS_ABOVE else value
        return datetime.fromtimestamp(seconds, tz=UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an ISO 8601 string or an epoch number")
    text = value.strip()
    if _EPOCH_TEXT.fullmatch(text):
        return parse_tavus_datetime(float(text))
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class TavusDateTime(fields.Field):
    """A date in any of Tavus's forms; loads to an aware UTC datetime."""

    default_error_messages = {"invalid": "Not a date Tavus sends: {reason}."}  # noqa: RUF012

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            return parse_tavus_datetime(value)
        except (ValueError, OverflowError, OSError) as exc:
            raise self.make_error("invalid", reason=exc) from exc

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else value.isoformat()


MAX_ID_LENGTH = 255


def required_text(**kwargs: Any) -> fields.String:
    """A string that must be present and not empty: the ids every record hangs on."""
    return fields.String(required=True, validate=_usable, **kwargs)


def required_id(**kwargs: Any) -> fields.String:
    """An id: present, not empty, and short enough to index."""
    checks = [_usable, validate.Length(max=MAX_ID_LENGTH)]
    return fields.String(required=True, validate=checks, **kwargs)


def optional_text(**kwargs: Any) -> fields.String:
    return fields.String(load_default=None, allow_none=True, **kwargs)


def _usable(value: str) -> None:
    """Not blank, and storable: these values end up in keys and indexed text columns."""
    if not value.strip():
        raise ValidationError("Must not be empty.")
    if "\x00" in value:
        raise ValidationError("Must not contain a NUL character.")


def having(*names: str) -> Callable[[dict[str, Any]], bool]:
    """A kind's rule: a body is of the kind when it has all these top-level fields."""
    return lambda body: all(name in body for name in names)
