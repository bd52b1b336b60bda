"""The contract every destination keeps, the event it is handed, and what an attempt answers.

A destination takes one event somewhere outside: a signed webhook to the user's app, a stream,
a queue, a bucket, a Python hook in the worker. It says which events it wants (``wants``) and
delivers one (``deliver``), returning an ``Answer`` on success and raising
``workers.errors.Transient`` (try again later) or ``Permanent`` (stop) otherwise. Errors are
stored and printed by ``tavus-callbacks deliveries``, so they never carry a secret or a URL:
name the host.

A type chosen by the scheme of ``FORWARD_<NAME>_URL`` subclasses ``UrlDestination``, which
holds what they all share (the name, the event filter, ``FORWARD_RETRY_HOURS``, the lease); it
declares its ``settings`` (whose name is its ``type``) and writes ``configure`` (read its URL)
and ``deliver``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qsl

import orjson

from schemas.messages import FORWARD_EVENT
from schemas.settings import DestinationSettings, ForwardDestination, Settings, SettingsError
from workers.pausing import Guard


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
    """One place events go. ``name`` is what `deliveries --destination` takes; ``type`` is
    recorded with each delivery, and says which ``task`` delivers it again."""

    type: ClassVar[str]
    task: ClassVar[str]  # the Celery task that delivers to it (and so its queue)
    name: str
    rate: tuple[int, float] | None  # at most (count, per seconds): FORWARD_<NAME>_RATE
    guard: Guard  # paused when broken, in order when asked (``workers.pausing``)

    @classmethod
    def configured(cls, settings: Settings) -> list[Destination]:
        """This process's destinations of the type."""
        ...

    def prepare(self) -> None:
        """At worker start, before the pool forks: what must exist before the first event
        (an exchange to bind to). May raise Transient: the worker starts anyway."""
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


class UrlDestination:
    """What every ``FORWARD_<NAME>_URL`` type shares; a subclass declares ``settings`` (its type
    name, schemes and own variables) and writes ``configure`` and ``deliver``."""

    type: ClassVar[str]  # its settings' name, set for each subclass that declares them
    task: ClassVar[str] = FORWARD_EVENT
    settings: ClassVar[DestinationSettings]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings" in cls.__dict__:
            cls.type = cls.settings.type

    def __init__(self, config: ForwardDestination, settings: Settings) -> None:
        self.name = config.name
        self.rate = config.rate
        self.guard = Guard(config.pause_after, config.probe_seconds, config.order)
        self.host = config.host  # what errors may name: never the URL, it may hold a password
        self.options = self.settings.read(config)  # FORWARD_<NAME>_<SUFFIX>, by lower suffix
        self._events = config.events
        self._timeout = settings.forward_timeout_seconds
        self._retry_for = timedelta(hours=settings.forward_retry_hours)
        self.configure(config, settings)

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        """The type's own reading of its URL (``config.parts``, ``self.query``), once what all
        share is set: raise ``self.refuse(config, why)`` for a bad one. None by default."""
        return None

    @classmethod
    def configured(cls, settings: Settings) -> list[UrlDestination]:
        return [
            cls(config, settings)
            for config in settings.forward_destinations
            if config.scheme in cls.settings.schemes
        ]

    def prepare(self) -> None:
        return None

    @staticmethod
    def refuse(config: ForwardDestination, why: str) -> SettingsError:
        """What stops the worker at start for a bad URL: its variable and ``why`` (ours to
        write, so that it never quotes the URL or its credentials)."""
        return SettingsError(f"invalid environment: { {config.variable('URL'): [why]} }")

    @classmethod
    def query(cls, config: ForwardDestination, known: Iterable[str]) -> dict[str, str]:
        """The URL's ``?name=value`` options, refusing a repeated or unknown one."""
        pairs = parse_qsl(config.parts.query, keep_blank_values=True)
        options = dict(pairs)
        unknown = sorted(set(options) - set(known))
        if unknown or len(options) != len(pairs):
            why = f"unknown or repeated option(s) {unknown} in the URL; known: {sorted(known)}"
            raise cls.refuse(config, why)
        return options

    def wants(self, kind: str | None, event_type: str | None) -> bool:
        return matches(self._events, kind, event_type)

    def lease_seconds(self) -> float:
        return 2 * self._timeout + 15  # connect and answer timeouts, and room to record

    def gives_up(self, attempts: int, first_attempt_at: datetime, now: datetime) -> bool:
        return now - first_attempt_at >= self._retry_for
