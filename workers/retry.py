"""The one retry policy of every task, and the two words every part maps its errors onto.

- **Transient**: the infrastructure (the store, Redis, the network, a timeout, a 5xx or a 429 from
  someone else's server). Nothing is wrong with the work itself; it is retried with exponential
  backoff and jitter for as long as it takes.
- **Permanent**: the work itself (a payload the code cannot take, a bug, a 4xx). Retrying cannot
  fix it soon; it is tried a bounded number of times, then dead-lettered where a person sees it.

Parts raise ``Transient`` / ``Permanent`` (``raise Transient(...) from exc``) where they know
which it is; ``is_transient`` classifies what escaped without such a word.
"""

from __future__ import annotations

import random
import socket

import kombu.exceptions
import redis.exceptions
import requests
import sqlalchemy.exc

# The longest wait between two attempts, whatever the attempt count; the visibility timeout may
# lower it (``cap_seconds``) but never raise it.
MAX_BACKOFF_SECONDS = 300.0


class Transient(Exception):
    """An infrastructure fault: try again later; ``retry_after`` where the other side said when."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(Exception):
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


def cap_seconds(visibility_timeout_seconds: float) -> float:
    """The longest countdown allowed: below half the visibility timeout.

    A task with an ETA waits unacked in the worker that fetched it; if it waited past the
    visibility timeout, Redis would hand the same message to a second worker as well.
    """
    return min(MAX_BACKOFF_SECONDS, visibility_timeout_seconds / 2 * 0.95)


def backoff(attempt: int, cap: float, base: float = 1.0) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): ``base`` doubling per
    attempt up to ``cap``, with jitter over its upper half so that a crowd spreads out."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 32))
    return random.uniform(ceiling / 2, ceiling)


def delay(attempt: int, cap: float, base: float = 1.0, retry_after: float | None = None) -> float:
    """``backoff``, or the other side's ``Retry-After`` when it asked for longer; never past cap."""
    wait = backoff(attempt, cap, base)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, cap)
