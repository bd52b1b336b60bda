"""Where events go besides the store, by type: adding one is a module with a ``Destination``
class (see ``base``) and a line in ``TYPES``."""

from __future__ import annotations

from schemas.settings import Settings

from .base import Answer, Destination, ForwardedEvent, matches
from .hooks import HookDestination
from .webhook import WebhookDestination

TYPES: tuple[type, ...] = (WebhookDestination, HookDestination)


def configured(settings: Settings) -> dict[str, Destination]:
    """Every destination of this process, by name: FORWARD_<NAME>_* and the loaded hooks."""
    return {dest.name: dest for kind in TYPES for dest in kind.configured(settings)}


def task_for(name: str) -> str:
    """The task (and so the queue) that delivers to ``name``, configured here or not."""
    return next(kind.task for kind in TYPES if kind.owns(name))


__all__ = ["TYPES", "Answer", "Destination", "ForwardedEvent", "configured", "matches", "task_for"]
