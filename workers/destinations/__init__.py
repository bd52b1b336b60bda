"""Where events go besides the store, by type: adding one is a module with a ``Destination``
class (see ``base``) and a line in ``TYPES``. A type configured by ``FORWARD_<NAME>_*`` names
its URL schemes and its own settings in a ``settings`` attribute (``DestinationSettings``)."""

from __future__ import annotations

from schemas.settings import DestinationSettings, Settings, SettingsError

from .base import Answer, Destination, ForwardedEvent, matches
from .hooks import HookDestination
from .webhook import WebhookDestination

TYPES: tuple[type, ...] = (WebhookDestination, HookDestination)


def configured(settings: Settings) -> dict[str, Destination]:
    """Every destination of this process, by name: FORWARD_<NAME>_* and the loaded hooks."""
    return {dest.name: dest for kind in TYPES for dest in kind.configured(settings)}


def forward_types() -> tuple[DestinationSettings, ...]:
    """The settings of every type a ``FORWARD_<NAME>_URL`` can choose, for the reference too."""
    return tuple(kind.settings for kind in TYPES if getattr(kind, "settings", None))


def check(settings: Settings) -> None:
    """Refuse, naming the variable, a FORWARD_<NAME>_* that no type takes or its type refuses.

    ``Settings.from_env`` checks what every destination has; this checks the rest, in the
    processes that know the types (a worker, at start).
    """
    by_scheme = {scheme: kind for kind in forward_types() for scheme in kind.schemes}
    for config in settings.forward_destinations:
        kind = by_scheme.get(config.scheme)
        if kind is None:
            known = ", ".join(f"{scheme}://" for scheme in sorted(by_scheme))
            why = f"no destination type for {config.scheme}://; known: {known}"
            raise SettingsError(f"invalid environment: { {config.variable('URL'): [why]} }")
        kind.read(config)


def task_for(name: str) -> str:
    """The task (and so the queue) that delivers to ``name``, configured here or not."""
    return next(kind.task for kind in TYPES if kind.owns(name))


__all__ = [
    "TYPES",
    "Answer",
    "Destination",
    "ForwardedEvent",
    "check",
    "configured",
    "forward_types",
    "matches",
    "task_for",
]
