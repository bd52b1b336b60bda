"""The one retry policy of every task, over the error vocabulary of ``workers.errors``.

``Transient`` and ``Permanent`` are imported here too, so that a hook's documented
``from workers.retry import Permanent`` keeps working.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from celery.exceptions import Reject, Retry

from schemas.backoff import backoff
from workers.errors import Permanent, Transient, is_transient

__all__ = ["Permanent", "Transient", "cap_seconds", "delay", "is_transient", "later", "run"]

if TYPE_CHECKING:
    from celery import Task

    from schemas.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# The longest wait between two attempts, whatever the attempt count; the visibility timeout may
# lower it (``cap_seconds``) but never raise it.
MAX_BACKOFF_SECONDS = 300.0


def cap_seconds(visibility_timeout_seconds: float) -> float:
    """The longest countdown allowed: below half the visibility timeout.

    A task with an ETA waits unacked in the worker that fetched it; if it waited past the
    visibility timeout, Redis would hand the same message to a second worker as well.
    """
    return min(MAX_BACKOFF_SECONDS, visibility_timeout_seconds / 2 * 0.95)


# The first wait of a delivery outside (a forward destination, an alert channel); it doubles.
DELIVERY_RETRY_BASE_SECONDS = 2.0


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
# What a ``Transient`` asked the next try to know (its ``carry``).
CARRY_HEADER = "tavus_carry"

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
    max_attempts: int,
) -> T | Any:
    """Run ``work`` for ``subject`` (an event id, a conversation id...) under the one policy.

    ``dead_letter(exc, failures)`` records the failure once ``max_attempts`` (the stage's bound)
    are used up; a transient fault while recording it is retried like any other.
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
        if failures < max_attempts:
            wait = delay(failures, cap_seconds(settings.visibility_timeout_seconds))
            log.error(
                "%s %s: attempt %d of %d failed, retry in %.1f s: %r",
                stage,
                subject,
                failures,
                max_attempts,
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
    carry = getattr(exc, "carry", None)
    later(task, wait, settings, headers=None if carry is None else {CARRY_HEADER: carry})


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


def again(task: Task, seconds: float, settings: Settings) -> None:
    """Publish the task again for ``seconds`` from now and let this run end well: for a task
    whose attempts live in the store (a delivery that must wait: paused, rate-limited, in
    order, retrying). No ``Retry`` is raised, because Celery keeps memory for every one it
    handles (docs/reliability.md); the copy is published before this run is acked, as a retry's.
    """
    wait = min(seconds, cap_seconds(settings.visibility_timeout_seconds))
    try:
        task.retry(countdown=wait, throw=False)
    except Reject as rejected:
        raise Reject(rejected.reason, requeue=True) from rejected


def carried(task: Task) -> dict[str, Any] | None:
    """What the try before this one asked it to know (``Transient(carry=...)``), if anything."""
    headers = task.request.headers or {}
    value = headers.get(CARRY_HEADER, getattr(task.request, CARRY_HEADER, None))
    return value if isinstance(value, dict) else None


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
