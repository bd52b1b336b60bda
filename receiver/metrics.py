"""The receiver's Prometheus instruments (README "Metrics"): what the intake counts and times.

Every gunicorn worker counts in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set and wiped by deploy/gunicorn.conf.py before the workers start), and ``/metrics``
(console.metrics) adds the workers' files up. An increment is a few microseconds on a memory
mapped file: cheap enough for the hot path, which `tavus-callbacks bench` checks.

Labels are bounded by construction: an HTTP status code, a kind from the classifier (or
"unclassified"), an outcome from a fixed list. Nothing from a payload, a path or a header.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import Counter, Histogram

from schemas.callbacks import KIND_TABLE

UNCLASSIFIED = "unclassified"  # refused before it was classified, or no known shape matched

# The intake answers in about a millisecond on a quiet machine; the upper buckets show a
# stalled Redis (2 s socket timeout) or a slow client's body.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

CALLBACKS = Counter(
    "tavus_callbacks_received",
    "Callbacks answered by the intake, by HTTP status code and callback kind.",
    ["code", "kind"],
)
ACK_SECONDS = Histogram(
    "tavus_callbacks_ack_duration_seconds",
    "Seconds from a callback request's start to its answer (the ack), whatever the answer.",
    buckets=ACK_BUCKETS,
)
PUBLISH_FAILURES = Counter(
    "tavus_callbacks_publish_failures",
    "Publishes to Redis that failed (the event then went to the spool, or was refused).",
)
SPOOL_WRITES = Counter(
    "tavus_callbacks_spool_writes",
    "Events written to the local spool (written), or that the spool could not take (failed).",
    ["outcome"],
)
SPOOL_DRAINED = Counter(
    "tavus_callbacks_spool_drained",
    "Spooled events a drain handled: published, duplicate (already queued) or rejected.",
    ["outcome"],
)


def kind_label(kind: str | None) -> str:
    return kind if kind in KIND_TABLE else UNCLASSIFIED  # registered kinds included


def instrument(app: Flask) -> None:
    """Count and time every answer under ``/callbacks``, errors included (they are answered by
    the app's error handlers, after the view)."""
    app.before_request(start_clock)
    app.after_request(count_answer)


def start_clock() -> None:
    g.callback_started = time.perf_counter()


def count_answer(response: Response) -> Response:
    if request.path.startswith("/callbacks"):
        ACK_SECONDS.observe(time.perf_counter() - g.get("callback_started", 0.0))
        CALLBACKS.labels(str(response.status_code), kind_label(g.get("callback_kind"))).inc()
    return response


def classified(kind: str | None) -> None:
    """The intake classified this request's body as ``kind``: label its answer so."""
    g.callback_kind = kind


def count_drained(published: int, duplicates: int, rejected: int) -> None:
    for outcome, count in (
        ("published", published),
        ("duplicate", duplicates),
        ("rejected", rejected),
    ):
        if count:
            SPOOL_DRAINED.labels(outcome).inc(count)
