"""The contract every notifier keeps, the alert it is handed, and the two ways it can fail.

A notifier sends one alert to one channel. It maps its library's errors onto
``TransientDeliveryError`` (worth a retry: timeouts, refused connections, 5xx, throttling) or
``PermanentDeliveryError`` (a retry cannot help: a rejected request, bad credentials). The
message of either is stored and shown by ``tavus-callbacks alerts``, so it must never carry a
secret: name the host, never the URL, and never repeat a password or a signing key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from schemas.settings import Settings
from workers import errors

SEVERITY_LABELS = {"critical": "CRITICAL", "error": "ERROR", "warning": "WARNING", "info": "INFO"}


@dataclass(frozen=True)
class Alert:
    """What every channel says: the stored alert, as plain values."""

    alert_id: str
    cause_key: str
    severity: str
    title: str
    text: str
    conversation_id: str | None
    event_id: str | None
    facts: dict[str, Any]
    raised_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "cause_key": self.cause_key,
            "severity": self.severity,
            "title": self.title,
            "text": self.text,
            "conversation_id": self.conversation_id,
            "event_id": self.event_id,
            "facts": self.facts,
            "raised_at": self.raised_at.isoformat(),
        }

    def short_facts(self) -> list[tuple[str, str]]:
        """The single-valued facts as (label, text) pairs, for people to read at a glance.

        Lists and objects (the likely causes, say) are spelled out in ``text`` already; the
        webhook channel carries them whole, for machines.
        """
        return [
            (key.replace("_", " ").capitalize(), str(value))
            for key, value in self.facts.items()
            if value is not None and not isinstance(value, list | tuple | dict)
        ]


class DeliveryError(Exception):
    """A delivery did not happen. The message is stored: no secret may be in it."""


class TransientDeliveryError(DeliveryError, errors.Transient):
    """Retry with backoff: the channel may take it later (``retry_after``: when it said to)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after)


class PermanentDeliveryError(DeliveryError, errors.Permanent):
    """Record and stop: the same request would be refused again."""


class Notifier(Protocol):
    """One channel. ``from_settings`` answers None when the channel is not configured."""

    channel: ClassVar[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier | None: ...

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise a ``DeliveryError``."""
        ...
