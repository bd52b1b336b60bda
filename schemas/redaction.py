"""Keep secrets out of every log line: callback tokens, URL passwords, callback paths.

The callback URL carries the token, so any line that quotes a path (gunicorn's "Error handling
request /callbacks/...", an invalid request line, a traceback) would leak it. ``RedactingFilter``
rewrites each record before a handler formats it: configured secrets become ``[redacted]``,
``/callbacks/<anything>`` becomes ``/callbacks/[redacted]`` and ``scheme://user:password@`` loses
its password. It sits on handlers, not loggers, because a logger's filter never sees the records
its children propagate. The app factory installs it on the handlers that exist; gunicorn's own
handlers get it from the logger class in ``deploy/gunicorn.conf.py``, a Celery worker's and
beat's from ``workers/logs.py``. All pass the secrets of the settings their entry point read:
nothing here reads the environment. Whatever the format (``schemas.logs``), the formatter sees
the record only once this filter has rewritten it.

This module imports nothing beyond the standard library and ``schemas``, so gunicorn's master can
load it without the app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from schemas.logs import formatter_for

REDACTED = "[redacted]"
# Shorter "secrets" (a one-letter test password) would blank out ordinary words; URL passwords of
# any length are still caught by the URL pattern.
MIN_SECRET_LENGTH = 4

_CALLBACK_PATH = re.compile(r"(/callbacks/)[^\s\"'?#]+")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(@)")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _CALLBACK_PATH.sub(rf"\g<1>{REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{REDACTED}\g<2>", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts a record's message, arguments, traceback and stack."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        chosen = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        self.secrets = tuple(sorted(chosen, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: still log it, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


def install(
    secrets: Iterable[str],
    loggers: Iterable[str] = ("", "gunicorn.error"),
    log_format: str = "text",
) -> None:
    """Put a RedactingFilter on every handler of ``loggers`` (root and gunicorn's error log).

    Records from our modules propagate to the root logger; when it has no handler (a bare
    gunicorn), one is added, in ``log_format``, so that they are printed, redacted, instead of
    falling through to logging's unfiltered last-resort handler.
    """
    redactor = RedactingFilter(secrets)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter_for(log_format))
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if not any(_same_filter(f, redactor) for f in handler.filters):
                handler.addFilter(redactor)


def _same_filter(existing: logging.Filter | object, new: RedactingFilter) -> bool:
    return isinstance(existing, RedactingFilter) and existing.secrets == new.secrets
