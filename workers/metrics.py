"""The workers' Prometheus instruments, served by each worker node on ``WORKER_METRICS_PORT``.

Celery's prefork pool runs tasks in child processes, so with a port set the instruments count in
prometheus_client's multiprocess mode, in a directory of the worker's own (never the web's):
workers.celery_app exports it when Celery is about to import the task modules (the
``import_modules`` signal, in the main process, before this module is imported and before any
child is forked), and ``serve`` answers scrapes from the main process. Without
``WORKER_METRICS_PORT`` nothing is served and the instruments count in memory only.

Labels are bounded: kinds from the classifier, outcomes and statuses from fixed lists, task
names of ours, channels and destinations from the sets this process has
(anything else is "other"). Never an id, a URL or a payload value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from celery import signals
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)

from schemas.callbacks import KIND_TABLE
from schemas.messages import SEVERITIES
from schemas.settings import Settings, multiprocess_dir_set

log = logging.getLogger(__name__)

UNCLASSIFIED = "unclassified"
OTHER = "other"

EVENTS_PROCESSED = Counter(
    "tavus_callbacks_events_processed",
    "Event processing attempts, by callback kind and outcome (processed, unhandled, "
    "quarantined, failed, retrying, error; erased: about an erased id, dropped).",
    ["kind", "outcome"],
)
PROCESSING_SECONDS = Histogram(
    "tavus_callbacks_event_processing_seconds",
    "Seconds one event processing attempt took in a worker (store, handler, follow-ups).",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TASK_RETRIES = Counter(
    "tavus_callbacks_task_retries",
    "Tasks scheduled again after a failed attempt, by task name.",
    ["task"],
)
DEAD_LETTERS = Counter(
    "tavus_callbacks_dead_letters",
    "Work given up on after its retries (an event marked failed, a delivery failed), by task.",
    ["task"],
)
VERIFICATIONS = Counter(
    "tavus_callbacks_verifications",
    "Recording verification attempts, by outcome (verified, missing, access_denied, refused, "
    "error, skipped, retrying, stale).",
    ["outcome"],
)
ALERTS_RAISED = Counter(
    "tavus_callbacks_alerts_raised",
    "Alert messages stored (a repeat of a cause counts again; it is sent once), by severity.",
    ["severity"],
)
ALERT_DELIVERIES = Counter(
    "tavus_callbacks_alert_deliveries",
    "Alert delivery attempts, by channel and outcome (delivered, retrying, failed, ...).",
    ["channel", "outcome"],
)
DELIVERIES = Counter(
    "tavus_callbacks_deliveries",
    "Event deliveries to the configured destinations, by destination name and outcome.",
    ["destination", "outcome"],
)


def kind_label(kind: Any) -> str:
    return kind if kind in KIND_TABLE else UNCLASSIFIED  # registered kinds included


def event_processed(message: Any, outcome: str, started: float) -> None:
    """One attempt at a PROCESS_EVENT message ended with ``outcome``; ``started`` is its
    ``time.perf_counter()`` at the start."""
    kind = kind_label(message.get("kind") if isinstance(message, dict) else None)
    EVENTS_PROCESSED.labels(kind, outcome).inc()
    PROCESSING_SECONDS.labels(kind).observe(time.perf_counter() - started)


def alert_raised(severity: Any) -> None:
    ALERTS_RAISED.labels(severity if severity in SEVERITIES else OTHER).inc()


def alert_delivery(channel: str, outcome: str, known: Collection[str]) -> None:
    """As ``delivery``: only channels in ``known`` (the registered ones) become label values."""
    ALERT_DELIVERIES.labels(channel if channel in known else OTHER, outcome).inc()


def delivery(destination: str, outcome: str, configured: Collection[str]) -> None:
    """A delivery to ``destination`` ended with ``outcome``; only names in ``configured`` (the
    destinations the settings define) become label values, so an unknown name cannot add
    series."""
    DELIVERIES.labels(destination if destination in configured else OTHER, outcome).inc()


def dead_letter(task: str) -> None:
    DEAD_LETTERS.labels(task).inc()


# --- serving ----------------------------------------------------------------------------------
# Connected when the task modules import this module: in a worker's main process that is before
# the pool forks, and after workers.celery_app exported the multiprocess directory.


@signals.worker_init.connect(weak=False)
def serve(sender: Any = None, **_: Any) -> None:
    """Answer scrapes on WORKER_METRICS_PORT from the worker's main process, summing its pool
    children's files."""
    settings: Settings = sender.app.conf.tavus_settings
    if settings.worker_metrics_port is None:
        return
    registry = CollectorRegistry(auto_describe=False)
    multiprocess.MultiProcessCollector(registry)  # the directory celery_app exported
    start_http_server(settings.worker_metrics_port, registry=registry)
    log.info("worker metrics on port %d", settings.worker_metrics_port)


@signals.task_retry.connect(weak=False)
def _count_retry(sender: Any = None, **_: Any) -> None:
    task_retried(getattr(sender, "name", OTHER))


def task_retried(task_name: str) -> None:
    """A retry Celery does not see as one (``StageTask.again_in`` raises no ``Retry``)."""
    TASK_RETRIES.labels(task_name).inc()


@signals.worker_process_shutdown.connect(weak=False)
def _mark_dead(pid: int | None = None, **_: Any) -> None:
    """A pool child exits: its live gauges (if any) stop counting, as gunicorn's child_exit."""
    if pid is not None and multiprocess_dir_set():
        multiprocess.mark_process_dead(pid)
