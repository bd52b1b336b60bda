"""A toy alert channel: each alert as one JSON line appended to a file.

The recipe's one module (docs/architecture.md, "An alert channel"); its one line is the
``register`` decorator. A real channel declares its settings in schemas/settings.py; this toy
reads TOY_ALERT_FILE when the worker builds it, to stay out of the project's settings.
"""

from __future__ import annotations

import os

import orjson

from schemas.settings import Settings
from workers.alerts.notifiers import Alert, PermanentDeliveryError, register


@register
class FileNotifier:
    channel = "toy_file"

    def __init__(self, path: str) -> None:
        self._path = path

    @classmethod
    def from_settings(cls, settings: Settings) -> FileNotifier | None:
        path = os.environ.get("TOY_ALERT_FILE")
        return cls(path) if path else None

    def send(self, alert: Alert) -> None:
        try:
            with open(self._path, "ab") as out:
                out.write(orjson.dumps(alert.as_json()) + b"\n")
        except OSError as exc:
            raise PermanentDeliveryError(
                f"cannot append to the alert file: {exc.strerror}"
            ) from exc
