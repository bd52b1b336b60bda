"""A Python hook (``workers.hooks.on``) as a destination: each (event, hook) runs as its own task
on the ``hooks`` queue, with a time limit (``HOOK_TIMEOUT_SECONDS``), so one hook failing or
hanging costs only itself. Whatever it raises is retried with backoff up to
``HOOK_MAX_ATTEMPTS`` times; ``workers.retry.Permanent`` fails it at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from schemas.messages import RUN_HOOK
from schemas.settings import Settings
from workers import hooks
from workers.errors import Permanent, Transient
from workers.pausing import NO_GUARD

from .base import Answer, ForwardedEvent, matches

# Beyond HOOK_TIMEOUT_SECONDS, how long a hook deaf to its timer (stuck in C code, swallowing the
# exception) may run before the task's hard time limit kills its process.
HARD_LIMIT_MARGIN_SECONDS = 15.0
# After the hard time limit, the room to record the attempt before the lease runs out.
RECORD_SECONDS = 15.0


def hard_time_limit(timeout: float) -> float:
    """The ``run_hook`` task's hard time limit for hooks given ``timeout`` seconds each."""
    return timeout + HARD_LIMIT_MARGIN_SECONDS


class HookTimeout(Exception):
    """Raised into a hook that ran past HOOK_TIMEOUT_SECONDS."""


class HookDestination:
    type = "hook"
    task = RUN_HOOK
    rate = None  # a hook runs in the worker: its pool is its limit
    guard = NO_GUARD  # and a failing hook is its code's bug: no pause

    def __init__(self, hook: hooks.Registered, timeout: float, max_attempts: int) -> None:
        self.name = hook.name
        self._hook = hook
        self._timeout = timeout
        self._max_attempts = max_attempts

    @classmethod
    def configured(cls, settings: Settings) -> list[HookDestination]:
        """The hooks registered in this process (TAVUS_HOOKS, loaded at worker start)."""
        return [
            cls(hook, settings.hook_timeout_seconds, settings.hook_max_attempts)
            for hook in hooks.HOOKS.values()
        ]

    def prepare(self) -> None:
        return None  # TAVUS_HOOKS are imported at worker start (workers.tasks.forward)

    def wants(self, kind: str | None, event_type: str | None) -> bool:
        return matches(self._hook.patterns, kind, event_type)

    def lease_seconds(self) -> float:
        # Past the hard time limit, so that no second run starts while the first may still be
        # running; a run killed by that limit is attempted again once this is over.
        return hard_time_limit(self._timeout) + RECORD_SECONDS

    def gives_up(self, attempts: int, first_attempt_at: datetime, now: datetime) -> bool:
        return attempts >= self._max_attempts

    def deliver(self, event: ForwardedEvent) -> Answer:
        try:
            with time_limit(self._timeout):
                self._hook.function(event)
        except Permanent:
            raise
        except HookTimeout:
            raise Transient(
                f"still running after HOOK_TIMEOUT_SECONDS ({self._timeout:g}s)"
            ) from None
        except Exception as exc:  # the user's code: any error is worth another try
            raise Transient(f"{type(exc).__name__}: {exc}"[:2000]) from exc
        return Answer()


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise HookTimeout into the block after ``seconds`` (a SIGALRM timer: the main thread of a
    prefork pool process, where Celery runs tasks). Elsewhere the task's hard time limit stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise HookTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
