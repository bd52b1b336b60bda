"""Where events go besides the store, by type: adding one is a module with a ``Destination``
class (see ``base``) and a line in ``TYPES``. A type configured by ``FORWARD_<NAME>_*`` is a
``UrlDestination``: it names its type, its URL schemes and its own settings in a ``settings``
attribute (``DestinationSettings``). Each delivery records its destination's ``type``, which
names the task that delivers it again."""

from __future__ import annotations

from schemas.messages import FORWARD_EVENT
from schemas.settings import DestinationSettings, Settings, SettingsError

from .amqp_exchange import AmqpDestination
from .archive import ArchiveDestination
from .base import Answer, Destination, ForwardedEvent, UrlDestination, matches
from .hooks import HookDestination
from .redis_stream import RedisStreamDestination
from .sqs import SqsDestination
from .webhook import WebhookDestination

TYPES: tuple[type, ...] = (
    WebhookDestination,
    HookDestination,
    RedisStreamDestination,
    AmqpDestination,
    ArchiveDestination,
    SqsDestination,
)


def configured(settings: Settings) -> dict[str, Destination]:
    """Every destination of this process, by name: FORWARD_<NAME>_* and the loaded hooks."""
    return {dest.name: dest for kind in TYPES for dest in kind.configured(settings)}


def forward_types() -> tuple[DestinationSettings, ...]:
    """The settings of every type a ``FORWARD_<NAME>_URL`` can choose, for the reference too."""
    return tuple(kind.settings for kind in url_types())


def url_types() -> tuple[type[UrlDestination], ...]:
    return tuple(kind for kind in TYPES if issubclass(kind, UrlDestination))


def check(settings: Settings) -> None:
    """Refuse, naming the variable, a FORWARD_<NAME>_* that no type takes or its type refuses.

    ``Settings.from_env`` checks what every destination has; this checks the rest, in the
    processes that know the types (a worker, at start).
    """
    by_scheme = {scheme: kind for kind in url_types() for scheme in kind.settings.schemes}
    for config in settings.forward_destinations:
        kind = by_scheme.get(config.scheme)
        if kind is None:
            known = ", ".join(f"{scheme}://" for scheme in sorted(by_scheme))
            why = f"no destination type for {config.scheme}://; known: {known}"
            raise SettingsError(f"invalid environment: { {config.variable('URL'): [why]} }")
        kind(config, settings)  # reads its settings and its URL, as the worker will


def task_for(type_name: str) -> str:
    """The task (and so the queue) that delivers to a destination of the type ``type_name``
    (as its deliveries recorded it); a type no longer known here goes to the forward queue,
    whose task records that no such destination is configured."""
    return next((kind.task for kind in TYPES if kind.type == type_name), FORWARD_EVENT)


def prepare(settings: Settings) -> None:
    """At worker start: each destination readies what must exist before its first event."""
    for destination in configured(settings).values():
        destination.prepare()


__all__ = [
    "TYPES",
    "Answer",
    "Destination",
    "ForwardedEvent",
    "UrlDestination",
    "check",
    "configured",
    "forward_types",
    "matches",
    "prepare",
    "task_for",
]
