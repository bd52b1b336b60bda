"""The log channel: every alert, always, at the log level of its severity.

It is the channel that works when every other one is down, and the one a log drain (Heroku,
Kubernetes) ships to wherever the team already looks.
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
        # One line: paragraphs joined by " | ", blank lines dropped (no empty " |  | " segment).
        text = " | ".join(line.strip() for line in alert.text.splitlines() if line.strip())
        log.log(
            LEVELS.get(alert.severity, logging.ERROR),
            "ALERT %s [%s] %s: %s",
            alert.severity.upper(),
            alert.cause_key,
            alert.title,
            text,
        )
