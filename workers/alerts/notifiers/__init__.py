"""The channels, by name: adding one is a module with a ``Notifier`` class and a line here."""

from __future__ import annotations

from schemas.messages import ALERT_CHANNELS
from schemas.settings import Settings

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

NOTIFIERS: dict[str, type[Notifier]] = {
    cls.channel: cls for cls in (LogNotifier, SlackNotifier, WebhookNotifier, EmailNotifier)
}
assert set(NOTIFIERS) == set(ALERT_CHANNELS), "schemas.messages.ALERT_CHANNELS drifted"


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
    "configured_channels",
    "notifier_for",
]
