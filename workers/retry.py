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

import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import kombu.exceptions
import redis.exceptions
import requests
import sqlalchemy.exc
from celery.exceptions import Reject, Retry

from schemas.backoff import backoff

if TYPE_CHECKING:
    from celery import Task

    from schemas.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# The longest wait between two attempts, whatever the attempt count; the visibility timeout may
# lower it (``cap_seconds``) but never raise it.
MAX_BACKOFF_SECONDS = 300.0
# The first wait of a delivery (an alert channel, a forward destination), doubling per attempt.
RETRY_BASE_SECONDS = 2.0


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


def delay(attempt: int, cap: float, base: float = 1.0, retry_after: float | None = None) -> float:
    """``backoff``, or the other side's ``Retry-After`` when it asked for longer; never past cap."""
    wait = backoff(attempt, cap, base)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, cap)


# --- the policy applied to a Celery task ------------------------------------------------------
#
# Every task body runs inside ``run``: what escapes it is classified once, here. An
# infrastructure fault is retried for as long as it takes; anything else is retried a bounded
# number of times (counted in a message header, so that transient retries in between do not use
# them up), then handed to the stage's dead letter, which records it where a person sees it.

FAILURES_HEADER = "tavus_failures"

# How often each stage met each fault, since this process started (the metrics read it).
COUNTS: Counter[tuple[str, str]] = Counter()

Work = Callable[[], T]
DeadLetter = Callable[[BaseException, int], Any]


def run(
    task: Task,
    stage: str,
    subject: str,
    work: Work[T],
    dead_letter: DeadLetter,
    settings: Settings,
) -> T | Any:
    """Run ``work`` for ``subject`` (an event id, a conversation id...) under the one policy.

    ``dead_letter(exc, failures)`` records the failure once the bounded attempts are used up; a
    transient fault while recording it is retried like any other.
    """
    try:
        return work()
    except (Retry, Reject):
        raise
    except Exception as exc:  # a boundary: every fault is retried or dead-lettered, none lost
        if is_transient(exc):
            _retry_transient(task, stage, subject, exc, settings)
        failures = failures_so_far(task) + 1
        COUNTS[stage, "permanent"] += 1
        if failures < settings.max_event_attempts:
            wait = delay(failures, cap_seconds(settings.visibility_timeout_seconds))
            log.error(
                "%s %s: attempt %d of %d failed, retry in %.1f s: %r",
                stage,
                subject,
                failures,
                settings.max_event_attempts,
                wait,
                exc,
            )
            later(task, wait, settings, headers={FAILURES_HEADER: failures})
        log.error("%s %s: dead-lettered after %d attempts: %r", stage, subject, failures, exc)
        COUNTS[stage, "dead_lettered"] += 1
        try:
            return dead_letter(exc, failures)
        except (Retry, Reject):
            raise
        except Exception as unrecorded:  # a boundary, as above
            if is_transient(unrecorded):
                _retry_transient(task, stage, subject, unrecorded, settings)
            COUNTS[stage, "unrecorded"] += 1
            log.critical("%s %s: the dead letter itself failed: %r", stage, subject, unrecorded)
            return None


def _retry_transient(
    task: Task, stage: str, subject: str, exc: BaseException, settings: Settings
) -> NoReturn:
    """An infrastructure fault: again, with backoff, for as long as it takes."""
    COUNTS[stage, "transient"] += 1
    cap = cap_seconds(settings.visibility_timeout_seconds)
    wait = delay(task.request.retries + 1, cap, retry_after=_retry_after(exc))
    log.warning("%s %s: infrastructure fault, retry in %.1f s: %r", stage, subject, wait, exc)
    later(task, wait, settings)


def later(
    task: Task, seconds: float, settings: Settings, headers: dict[str, Any] | None = None
) -> NoReturn:
    """Schedule the task again in ``seconds`` (capped below half the visibility timeout).

    Celery rejects a message for good (``requeue=False``) when it cannot publish the retry;
    here it goes back to its queue instead, so that a broker blip cannot drop it.
    """
    wait = min(seconds, cap_seconds(settings.visibility_timeout_seconds))
    options: dict[str, Any] = {"countdown": wait}
    if headers is not None:
        options["headers"] = {**(task.request.headers or {}), **headers}
    try:
        raise task.retry(**options)
    except Reject as rejected:
        raise Reject(rejected.reason, requeue=True) from rejected


def failures_so_far(task: Task) -> int:
    """The bounded attempts this message has used (its header, carried from retry to retry)."""
    headers = task.request.headers or {}
    value = headers.get(FAILURES_HEADER, getattr(task.request, FAILURES_HEADER, 0))
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return value if isinstance(value, int | float) else None
