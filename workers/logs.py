"""The worker's and beat's log lines: redacted like the web's, in LOG_FORMAT, with each task's
context.

Celery sets up its own handlers when a worker or beat starts; once it has (its
``after_setup_*logger`` signals) each handler gets the redaction filter and, with
``LOG_FORMAT=json``, the JSON formatter (schemas/logs.py); in JSON the root logger has its
handler from the start, Python's warnings are logged, and no startup banner (free text) is
printed. While a task runs, its lines carry the task's name and id and, where
its arguments name them, the event id and conversation id.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.utils.log import get_multiprocessing_logger

from schemas import logs
from schemas.messages import FORWARD_EVENT, RUN_HOOK, VERIFY_RECORDING
from schemas.redaction import RedactingFilter
from schemas.settings import Settings

# Tasks whose first argument is an event id, or a conversation id; the others take a queue
# message (a dict that may hold both).
_EVENT_ID_FIRST = frozenset({FORWARD_EVENT, RUN_HOOK})
_CONVERSATION_ID_FIRST = frozenset({VERIFY_RECORDING})


def install(app: Celery, settings: Settings) -> None:
    formatter = logs.JsonFormatter() if settings.log_format == "json" else None
    handlers = _Handlers(RedactingFilter(settings.secrets()), formatter)
    # One app per process: a second create_celery (tests) keeps the first's receivers.
    signals.after_setup_logger.connect(handlers, weak=False, dispatch_uid="tavus-logs")
    signals.after_setup_task_logger.connect(handlers, weak=False, dispatch_uid="tavus-task-logs")
    signals.task_prerun.connect(_bind_task, weak=False)
    signals.task_postrun.connect(_unbind_task, weak=False)
    if formatter is not None:
        _log_json_from_now(handlers)
        signals.celeryd_init.connect(_no_banner, weak=False)
        app.Beat = _quiet(app.Beat)


def _log_json_from_now(handlers: _Handlers) -> None:
    """A JSON handler on the root logger already, so that what comes before Celery sets up its
    logging (a warning about running as root, say) is a JSON line too; Celery then keeps it."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    handlers(root)
    logging.captureWarnings(True)  # warnings as log records, not free text on stderr


class _Handlers:
    """Redact (and lay out) what the handlers Celery just set up print."""

    def __init__(self, redactor: RedactingFilter, formatter: logging.Formatter | None) -> None:
        self.redactor = redactor
        self.formatter = formatter

    def __call__(self, logger: logging.Logger | None = None, **_: Any) -> None:
        for each in (logger, get_multiprocessing_logger()):
            for handler in each.handlers if each is not None else ():
                if self.redactor not in handler.filters:
                    handler.addFilter(self.redactor)
                if self.formatter is not None:
                    handler.setFormatter(self.formatter)


_bound: dict[str, Any] = {}  # task id -> the context token to restore when it ends


def _bind_task(task_id: str, task: Any, args: Any = (), **_: Any) -> None:
    _bound[task_id] = logs.bind(task=task.name, task_id=task_id, **ids_of(task.name, args))


def _unbind_task(task_id: str, **_: Any) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        logs.unbind(token)


def ids_of(task_name: str, args: Any) -> dict[str, Any]:
    """The event id and conversation id a task's arguments name, as far as they do."""
    first = args[0] if args else None
    if isinstance(first, dict):
        return {key: first.get(key) for key in ("event_id", "conversation_id")}
    if task_name in _EVENT_ID_FIRST:
        return {"event_id": first}
    if task_name in _CONVERSATION_ID_FIRST:
        return {"conversation_id": first}
    return {}


def _no_banner(instance: Any = None, **_: Any) -> None:
    instance.quiet = True  # the banner is printed as is, not logged


def _quiet(beat: type) -> type:
    class QuietBeat(beat):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "quiet": True})

    return QuietBeat
