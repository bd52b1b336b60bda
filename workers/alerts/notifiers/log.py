"""The log channel: every alert, always, at the log level of its severity.

It is the channel that works when every other one is down, and the one a log drain (Heroku,
Kubernetes) ships to wherever the team already looks. A log line cannot be erased, and a drain
keeps it as long as it likes: so it names the alert by its rule and ids only, never its title or
text, which may quote a conversation (a guardrail's name). The other channels, the console and
``tavus-callbacks alerts`` carry the rest.
"""

from __future__ import annotations

import logging

from schemas.settings import Settings

from .base import Alert

log = logging.getLogger("tavus.alerts")

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
}


class LogNotifier:
    channel = "log"

    @classmethod
    def from_settings(cls, settings: Settings) -> LogNotifier:
        return cls()

    def send(self, alert: Alert) -> None:
        # About a conversation: its rule and id (a guardrail's key holds its name); else the key.
        rule = alert.cause_key.split(":", 1)[0]
        about = f"{rule}:{alert.conversation_id}" if alert.conversation_id else alert.cause_key
        log.log(
            LEVELS.get(alert.severity, logging.ERROR),
            "ALERT %s [%s] alert %s: tavus-callbacks alerts, or the console's Alerts page",
            alert.severity.upper(),
            about,
            alert.alert_id,
        )
