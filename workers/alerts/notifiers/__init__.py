"""The channels, by name: adding one is a module with a ``Notifier`` class and one line, in
``BUILT_IN`` here or ``register(TheNotifier)`` in a module of TAVUS_EXTENSIONS."""

from __future__ import annotations

from schemas.settings import Settings, SettingsError

from .base import (
    Alert,
    DeliveryError,
    Notifier,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from .email import EmailNotifier
from .log import LogNotifier
from .slack import SlackNotifier
from .webhook import WebhookNotifier

BUILT_IN: tuple[type[Notifier], ...] = (LogNotifier, SlackNotifier, WebhookNotifier, EmailNotifier)
NOTIFIERS: dict[str, type[Notifier]] = {cls.channel: cls for cls in BUILT_IN}


def register(cls: type[Notifier]) -> type[Notifier]:
    """Add a channel (from a TAVUS_EXTENSIONS module); usable as a class decorator."""
    known = NOTIFIERS.get(cls.channel)
    if known is not None and known is not cls:
        raise ValueError(f"alert channel {cls.channel!r} is already {known.__qualname__}")
    NOTIFIERS[cls.channel] = cls
    return cls


def check(settings: Settings) -> None:
    """ALERT_ROUTES names only channels this process has (its extensions loaded): checked at
    start, since a route to no channel would drop alerts in silence."""
    routed = {channel for _severity, channels in settings.alert_routes for channel in channels}
    unknown = sorted(routed - set(NOTIFIERS))
    if unknown:
        raise SettingsError(
            f"ALERT_ROUTES: unknown channel {unknown[0]!r}; known: {', '.join(NOTIFIERS)} "
            "(a channel of TAVUS_EXTENSIONS must be listed there)"
        )


def notifier_for(channel: str, settings: Settings) -> Notifier | None:
    """The channel's notifier, or None when it is unknown or not configured."""
    cls = NOTIFIERS.get(channel)
    return cls.from_settings(settings) if cls else None


def configured_channels(settings: Settings, severity: str) -> tuple[str, ...]:
    """The channels an alert of ``severity`` is routed to and that are configured."""
    return tuple(
        channel
        for channel in settings.alert_channels(severity)
        if notifier_for(channel, settings) is not None
    )


__all__ = [
    "NOTIFIERS",
    "Alert",
    "DeliveryError",
    "Notifier",
    "PermanentDeliveryError",
    "TransientDeliveryError",
    "check",
    "configured_channels",
    "notifier_for",
    "register",
]
