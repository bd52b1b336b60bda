"""Content columns, sealed with ``ENCRYPTION_KEYS`` when it is set (``schemas.crypto``).

``Sealed`` (text) and ``SealedJSON`` (JSON) seal a value on its way into the database and open it
on its way out, so every reader (the CLI, the API, the console, forwarding, hooks) gets plain
values and no query changes. A ``Store`` hands its cipher to its engine's dialect, the one
object SQLAlchemy passes to a type's processors: each engine seals with its own keys, and an
engine without keys writes plain text and fails on sealed content with ``MissingKey``, naming
the key it lacks. A sealed JSON value is stored as a JSON string, so the column keeps its type
(no migration) and the search index, which reads only arrays, finds nothing in it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from sqlalchemy import JSON, Text, TypeDecorator
from sqlalchemy.engine import Dialect

from schemas.crypto import PREFIX, Cipher, opened

CIPHER_ATTRIBUTE = "tavus_cipher"


def cipher_of(dialect: Dialect) -> Cipher | None:
    return getattr(dialect, CIPHER_ATTRIBUTE, None)


def give_cipher(dialect: Dialect, cipher: Cipher | None) -> None:
    setattr(dialect, CIPHER_ATTRIBUTE, cipher)


class Sealed(TypeDecorator[str]):
    """A text column of content."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        cipher = cipher_of(dialect)
        return value if value is None or cipher is None else cipher.seal(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not value.startswith(PREFIX):
            return value
        return opened(cipher_of(dialect), value)

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return Text()  # a LIKE pattern or a comparison is never sealed itself


class SealedJSON(TypeDecorator[Any]):
    """A JSON column of content: sealed, it holds the sealed JSON text as a JSON string."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        cipher = cipher_of(dialect)
        if value is None or cipher is None:
            return value
        try:
            text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what orjson refuses, such as integers beyond 64 bits
            text = json.dumps(value).encode()
        return cipher.seal(text)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, str) or not value.startswith(PREFIX):
            return value
        return json.loads(opened(cipher_of(dialect), value))

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return JSON()
