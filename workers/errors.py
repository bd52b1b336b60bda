"""The one error vocabulary: a root and two families every part maps its failures onto.

- ``Transient``: the infrastructure (the store, Redis, the network, a timeout, a 5xx or a 429
  from someone else's server). Nothing is wrong with the work itself; it is retried with
  exponential backoff and jitter for as long as it takes.
- ``Permanent``: the work itself (a payload the code cannot take, a bug, a 4xx). Retrying cannot
  fix it soon; it is tried a bounded number of times, then dead-lettered where a person sees it.

Parts raise a subclass of one of the two (``raise Transient(...) from exc``) where they know
which it is; ``is_transient`` classifies what escaped without such a word, from the libraries'
own exceptions. A hook raises ``Permanent`` (also importable as ``workers.retry.Permanent``)
to stop its retries.
"""

from __future__ import annotations

import socket
from typing import Any

import kombu.exceptions
import redis.exceptions
import requests
import sqlalchemy.exc


class TavusError(Exception):
    """The root: every failure this project names is one of the two families below."""


class Transient(TavusError):
    """An infrastructure fault: try again later; ``retry_after`` where the other side said when.

    ``carry``: what the next try must know (a JSON object, sent along with the retry), e.g. that
    a delivery was sent and only its record is missing.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.carry = carry


class Permanent(TavusError):
    """The work cannot be done as it is: a bounded number of tries, then a dead letter."""


# What the libraries we talk to raise when the other side is away or slow, never because of
# the work itself. SQLAlchemy's OperationalError covers a lost or refused database connection;
# its other DBAPI errors (IntegrityError, DataError, ...) are about the data, hence permanent.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Transient,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) is the infrastructure's, not the work's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Permanent):
            return False
        if isinstance(current, TRANSIENT_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
