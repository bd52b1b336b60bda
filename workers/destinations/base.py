"""The contract every destination keeps, the event it is handed, and what an attempt answers.

A destination takes one event somewhere outside: a signed webhook to the user's app, a Python
hook in the worker. It says which events it wants (``wants``) and delivers one (``deliver``),
returning an ``Answer`` on success and raising ``workers.retry.Transient`` (try again later) or
``Permanent`` (stop) otherwise. Errors are stored and printed by ``tavus-callbacks deliveries``,
so they never carry a secret or a URL: name the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

import orjson


@dataclass(frozen=True)
class ForwardedEvent:
    """One stored event as a destination sees it, read-only. ``id`` is the idempotency key."""

    id: str
    kind: str | None
    event_type: str | None
    conversation_id: str | None
    source: str  # callback, reconciled (pulled from the Tavus API), replay
    received_at: datetime
    raw: str  # the body exactly as Tavus posted it

    @property
    def body(self) -> Any:
        """The JSON Tavus sent, parsed afresh each time: one hook's changes never reach another."""
        return orjson.loads(self.raw)


@dataclass(frozen=True)
class Answer:
    """What the other side said to a successful attempt (None where there is no HTTP)."""

    status_code: int | None = None
    excerpt: str | None = None  # the first bytes of the reply


def with_answer(error: Exception, answer: Answer | None) -> Exception:
    """Attach the reply of a failed attempt to its Transient / Permanent, to be stored with it."""
    error.answer = answer  # type: ignore[attr-defined]
    return error


def answer_of(error: BaseException) -> Answer | None:
    return getattr(error, "answer", None)


class Destination(Protocol):
    """One place events go. ``name`` is what `deliveries --destination` takes."""

    type: ClassVar[str]
    task: ClassVar[str]  # the Celery task that delivers to it (and so its queue)
    name: str

    @staticmethod
    def owns(name: str) -> bool:
        """Is ``name`` one of this type's (configured here or not)?"""
        ...

    def wants(self, kind: str | None, event_type: str | None) -> bool: ...

    def deliver(self, event: ForwardedEvent) -> Answer:
        """Deliver or raise Transient / Permanent (carrying ``reply`` when there was one)."""
        ...

    def lease_seconds(self) -> float:
        """How long one attempt may take, at most: a claim holds the delivery this long."""
        ...

    def gives_up(self, attempts: int, first_attempt_at: datetime, now: datetime) -> bool:
        """After a transient failure: stop retrying now?"""
        ...


KINDS = ("conversation", "guardrail", "objective", "replica", "video", "document")


def matches(patterns: Iterable[str], kind: str | None, event_type: str | None) -> bool:
    """``*``, a kind (``objective``), an exact conversation event type, or ``prefix.*``."""
    for pattern in patterns:
        if pattern == "*" or pattern == kind:
            return True
        if event_type is None:
            continue
        if pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False
