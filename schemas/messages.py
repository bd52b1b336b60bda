"""The queue contract between the receiver and the workers: task names, queues, the message.

The receiver publishes by task *name*; it never imports a task function. Names are explicit
(never derived from module paths) so that moving a file cannot orphan queued messages.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NotRequired, TypedDict

import orjson

from .classify import Verdict

EVENTS_QUEUE = "events"
STORAGE_QUEUE = "storage"
ALERTS_QUEUE = "alerts"
FORWARD_QUEUE = "forward"  # signed webhooks to the user's endpoints
HOOKS_QUEUE = "hooks"  # the user's Python hooks
QUEUES = (EVENTS_QUEUE, STORAGE_QUEUE, ALERTS_QUEUE, FORWARD_QUEUE, HOOKS_QUEUE)

PROCESS_EVENT = "tavus.events.process"
VERIFY_RECORDING = "tavus.storage.verify_recording"
RAISE_ALERT = "tavus.alerts.raise"
DELIVER_ALERT = "tavus.alerts.deliver"  # args: cause_key, channel
# One delivery of one event to one destination; args: event_id, destination, source.
FORWARD_EVENT = "tavus.forward.deliver"
RUN_HOOK = "tavus.hooks.run"
# Periodic (celery beat): pull from the Tavus API what its callbacks never delivered.
RECONCILE = "tavus.events.reconcile"
# Periodic (celery beat): remove what RETENTION_DAYS lets go (workers/lifecycle.py).
PURGE = "tavus.events.purge"

# Routing by name: "tavus.storage.verify_recording" goes to the storage queue, and so on.
TASK_ROUTES = {f"tavus.{queue}.*": {"queue": queue} for queue in QUEUES}


def queue_for(task_name: str) -> str:
    """The queue ``TASK_ROUTES`` sends ``task_name`` to (the events queue by default, as Celery's
    ``task_default_queue``)."""
    parts = task_name.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "tavus" and parts[1] in QUEUES else QUEUES[0]


class EventMessage(TypedDict):
    """The one argument of PROCESS_EVENT: plain JSON, everything the worker needs to store it."""

    event_id: str  # our id, also the Celery task id
    event_key: str  # the idempotency key: equal keys are the same event
    kind: str | None  # conversation, guardrail, objective, replica, video, document; None: unknown
    event_type: str | None
    conversation_id: str | None
    received_at: float  # epoch seconds at the receiver
    body: str  # the raw JSON text exactly as posted
    errors: dict[str, Any] | None  # validation errors: set means quarantined
    source: str  # "callback", "reconciled" (pulled from the Tavus API), "replay", "import"
    # Only for events whose key marks a repeat for a short while (guardrails): the receiver's
    # dedup claim uses this key and TTL, while event_key is made unique to this event.
    claim_key: NotRequired[str]
    claim_ttl: NotRequired[int]
    # An imported event that was settled where it came from (``tavus-callbacks import``): the
    # deployment it came from raised its alerts and handed it on to its destinations, so this
    # one rebuilds its records and sends neither again.
    settled: NotRequired[bool]


def celery_envelope(task_name: str, task_id: str, args: list[Any], queue: str) -> bytes:
    """The JSON that kombu's Redis transport stores for one Celery protocol-2 task message.

    Lean on purpose: only what Celery's worker and kombu's Redis transport read without a
    default. The worker reads ``id`` and ``task`` from the headers and takes every other
    header (retries, eta, expires, root_id, timelimit...) as unset when it is missing, which
    is what Celery itself would have sent here; ``argsrepr`` stays so that a failing task is
    logged by its id, never by its arguments (the body). kombu needs ``delivery_tag`` and
    ``delivery_info`` (where an unacked message goes back to). With no ``body_encoding`` the
    body is taken as is: JSON text inside JSON, smaller than base64 for callback bodies and
    nothing to decode. tests/test_celery_app.py runs a real worker on these messages. The
    receiver queues events with it, the workers their follow-up tasks.
    """
    try:
        body = orjson.dumps([args, {}, {}]).decode()
    except TypeError:  # what orjson refuses (an integer beyond 64 bits from a payload)
        body = json.dumps([args, {}, {}])
    return orjson.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": task_name, "id": task_id, "argsrepr": f"[<{task_name} {task_id}>]"},
            "properties": {
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


# Alert severities, most severe first (the channels are the workers': workers.alerts.notifiers).
SEVERITIES = ("critical", "error", "warning", "info")


def event_message(
    verdict: Verdict, raw: bytes, received_at: float, source: str, event_id: str | None = None
) -> EventMessage:
    """The PROCESS_EVENT message for one classified body, wherever it came from; a new event id
    unless it keeps the one it had (an import)."""
    event_id = event_id or str(uuid.uuid4())
    message: EventMessage = {
        "event_id": event_id,
        "event_key": verdict.event_key,
        "kind": verdict.kind,
        "event_type": verdict.event_type,
        "conversation_id": verdict.conversation_id,
        "received_at": received_at,
        # The caller parsed it as JSON, so it is UTF-8.
        "body": raw.decode("utf-8"),
        "errors": verdict.errors,
        "source": source,
    }
    if verdict.repeat_window:
        message["claim_key"] = verdict.event_key
        message["claim_ttl"] = verdict.repeat_window
        message["event_key"] = f"{verdict.event_key}:{event_id}"
    return message


class AlertMessage(TypedDict):
    """The one argument of RAISE_ALERT: what happened, said once per cause."""

    cause_key: str  # one alert per cause, e.g. "recording_copy_failed:<conversation_id>"
    severity: str  # "critical", "error", "warning" or "info"
    title: str  # one line
    text: str  # what happened, the likely cause, what to do (and by when)
    conversation_id: str | None
    event_id: str | None
    facts: dict[str, Any]  # structured details: provider, uri, deadline...
