"""Log lines as text (the default) or, with ``LOG_FORMAT=json``, one JSON object per line.

A JSON line carries ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` (and ``error``
with the traceback, if any), and the context where it is known: ``event_id``,
``conversation_id``, ``task`` (and ``task_id``), ``trace_id`` and ``span_id``. The context comes
from a log call's ``extra``, else from what ``bind`` set for the work under way (a worker binds
each task's ids while it runs). The trace fields are those of the span current where the line
is logged, with tracing on (``schemas.tracing``), or what OpenTelemetry's logging
instrumentation set on the record (``otelTraceID``, ``otelSpanID``); ``null`` otherwise.

The formatter only lays out what the handler's filters left: the redaction filter
(``schemas.redaction``) sits on the same handlers and rewrites each record before any formatter
sees it, so both formats are redacted alike.

Standard library only (``schemas.tracing`` imports OpenTelemetry only once tracing is on), so
gunicorn's master can load it without the app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from . import tracing

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
CONTEXT_FIELDS = ("event_id", "conversation_id", "task", "task_id", "trace_id", "span_id")
# OpenTelemetry's LoggingInstrumentor names its record attributes so; "0" means no span.
_OTEL_FIELDS = {"trace_id": "otelTraceID", "span_id": "otelSpanID"}
_NO_TRACE = {None, "", "0"}

_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "tavus_log_context", default=MappingProxyType({})
)


def bind(**fields: Any) -> Any:
    """Add ``fields`` to the context of every line logged from now on in this context; returns
    the token that ``unbind`` takes to restore the context as it was."""
    known = {key: value for key, value in fields.items() if value is not None}
    return _context.set({**_context.get(), **known})


def unbind(token: Any) -> None:
    _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a string inside it)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        line.update(_context_of(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["error"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


def _context_of(record: logging.LogRecord) -> dict[str, Any]:
    bound_now = _context.get()
    context = {name: getattr(record, name, bound_now.get(name)) for name in CONTEXT_FIELDS}
    ids = tracing.current_ids()  # the span current where the line is logged (same thread)
    if ids is not None:
        context["trace_id"], context["span_id"] = ids
    for name, attribute in _OTEL_FIELDS.items():
        traced = getattr(record, attribute, None)
        if traced not in _NO_TRACE:
            context[name] = traced
    return context


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter LOG_FORMAT asks for; anything but "json" is the text format."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
