"""The worker's spans, when tracing is on (``schemas.tracing``, docs/tracing.md).

Each task a worker runs is a CONSUMER span, a child of the span that queued it: the
``traceparent`` in the message's headers, put there by ``schemas.broker`` (the receiver's
enqueue, a worker's follow-up task) or by Celery's own publishing (a retry, which so continues
from the attempt before it). Within it, ``workers.processing`` adds the handler's span and each
delivery its CLIENT span, whose ``traceparent`` goes on to the destination.

The SDK is started in the worker's main process before the pool forks (each child's export
thread is restarted by the SDK after the fork), and each child flushes what it holds as it
exits. With tracing off nothing here is connected.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from schemas import tracing

from .logs import ids_of

SERVICE_NAME = "tavus-callbacks-worker"

_open: dict[str, Any] = {}  # task id -> its span, while it runs
_errors: dict[str, BaseException] = {}  # task id -> what made it fail, until it ends


def install(app: Celery) -> None:
    signals.worker_init.connect(_start, sender=None, weak=False, dispatch_uid="tavus-traces")


def _start(sender: Any = None, **_: Any) -> None:
    settings = sender.app.conf.tavus_settings
    if not tracing.start(SERVICE_NAME, settings.tracing):
        return
    signals.task_prerun.connect(_begin, weak=False, dispatch_uid="tavus-trace-begin")
    signals.task_failure.connect(_failure, weak=False, dispatch_uid="tavus-trace-failure")
    signals.task_postrun.connect(_end, weak=False, dispatch_uid="tavus-trace-end")
    signals.before_task_publish.connect(_carry, weak=False, dispatch_uid="tavus-trace-carry")
    signals.worker_process_shutdown.connect(_flush, weak=False, dispatch_uid="tavus-trace-flush")
    signals.worker_shutdown.connect(_flush, weak=False, dispatch_uid="tavus-trace-flush-main")


def _begin(task_id: str, task: Any, args: Any = (), **_: Any) -> None:
    request = task.request
    # The message's own headers (ours, or Celery's with ``_carry``'s), then any nested copy.
    nested = request.headers or {}
    carrier = {
        name: getattr(request, name, None) or nested.get(name) for name in tracing.PROPAGATED
    }
    delivery = request.delivery_info or {}
    ids = ids_of(task.name, args)
    attributes = {
        "messaging.system": "celery",
        "messaging.operation.type": "process",
        "messaging.destination.name": delivery.get("routing_key"),
        "messaging.message.id": task_id,
        "celery.task.name": task.name,
        "celery.retries": request.retries or None,
        "tavus.event_id": ids.get("event_id"),
        "tavus.conversation_id": ids.get("conversation_id"),
    }
    _open[task_id] = tracing.start_span(f"process {task.name}", "consumer", attributes, carrier)


def _failure(task_id: str, exception: BaseException | None = None, **_: Any) -> None:
    if exception is not None:
        _errors[task_id] = exception


def _end(task_id: str, retval: Any = None, state: str | None = None, **_: Any) -> None:
    outcome = retval if isinstance(retval, str) else None
    tracing.end_span(
        _open.pop(task_id, None),
        _errors.pop(task_id, None),
        {"celery.state": state, "tavus.outcome": outcome},
    )


def _carry(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """A message Celery itself publishes from a task (its retry) continues the task's trace."""
    if headers is not None:
        tracing.inject(headers)


def _flush(**_: Any) -> None:
    tracing.flush()
