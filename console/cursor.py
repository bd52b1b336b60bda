"""Opaque cursors for keyset pagination.

A cursor is the sort key of the last item of a page (a time and an id), so the next page starts
strictly after it: items inserted meanwhile land before the cursor (they are newer) and shift
nothing, so paging never skips or repeats an item that was there when paging began.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import orjson


class BadCursor(ValueError):
    """A cursor this API did not hand out."""


def encode(at: datetime, item_id: str | int) -> str:
    raw = orjson.dumps([at.isoformat(), item_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str | int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, item_id = orjson.loads(raw)
        when = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise BadCursor("not a cursor from this API; start again without one") from exc
    if not isinstance(item_id, str | int) or when.tzinfo is None:
        raise BadCursor("not a cursor from this API; start again without one")
    return when, item_id


# Search results are ranked, not ordered by a key: their cursor is how many came before.
def encode_position(position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


def decode_position(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = orjson.loads(raw)["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
        raise BadCursor("not a cursor from this search; start again without one") from exc
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise BadCursor("not a cursor from this search; start again without one")
    return position
