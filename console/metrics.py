"""``GET /metrics``: the web process's metrics in the Prometheus text format (README "Metrics").

Two sources, one exposition:

- what the receiver counted (``receiver.metrics``), summed over every gunicorn worker from
  prometheus_client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, prepared by
  deploy/gunicorn.conf.py), or this process's own registry when there is no such directory;
- the pipeline's state, read at scrape time from Redis, the store and the spool directory: queue
  lengths and unacked messages, failed events and deliveries, the oldest pending event's age,
  the spool's size. A source that cannot be read is reported down
  (``tavus_callbacks_source_up``) rather than failing the scrape.

With ``METRICS_TOKEN`` set, a scrape must present it as a bearer token (Prometheus:
``authorization: {credentials: ...}``); it is compared in constant time and never exposed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING

import orjson
import redis
from flask import Flask, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from schemas.broker import UNACKED_KEY, queue_depths, redis_client
from schemas.messages import EVENTS_QUEUE, QUEUES
from schemas.settings import Settings
from schemas.spool_files import spooled_files, written_at
from schemas.tokens import any_matches

if TYPE_CHECKING:
    from .store_state import StoreState

log = logging.getLogger(__name__)


def create_metrics_app(settings: Settings) -> Flask:
    app = Flask("console.metrics")
    app.extensions["metrics"] = metrics_registry(settings)
    app.extensions["metrics_token"] = settings.metrics_token
    app.add_url_rule("/metrics", "metrics", scrape, methods=["GET"])
    return app


def metrics_registry(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if settings.prometheus_multiproc_dir:
        multiprocess.MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)
    else:
        registry.register(_ThisProcess())
    registry.register(PipelineCollector(settings))
    return registry


def scrape() -> Response:
    expected = current_app.extensions["metrics_token"]
    if expected and not _presents(expected):
        body = orjson.dumps(
            {"error": "unauthorized", "message": "send METRICS_TOKEN as a bearer token"}
        )
        return Response(
            body,
            status=401,
            mimetype="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    exposition = generate_latest(current_app.extensions["metrics"])
    return Response(exposition, status=200, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _presents(expected: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return any_matches(presented.strip(), [expected.encode()])


class _ThisProcess(Collector):
    """Without a multiprocess directory (one process, tests): this process's own instruments."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class PipelineCollector(Collector):
    """The pipeline's state, read when Prometheus scrapes (a few cheap reads each time)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis: redis.Redis | None = None

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "tavus_callbacks_source_up",
            "Whether this scrape could read a source of the pipeline metrics (1) or not (0).",
            labels=["source"],
        )
        now = time.time()
        oldest: list[float] = []
        try:
            yield from self._broker(oldest)
            up.add_metric(["redis"], 1)
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreadable: %s", type(exc).__name__)
            up.add_metric(["redis"], 0)
        # SQLAlchemy and the models come with the first scrape, not with the worker's start.
        from . import store_state

        state = store_state.read(self._settings)
        if state is not None:
            yield from self._store(state, oldest)
        up.add_metric(["store"], 0 if state is None else 1)
        yield from self._spool()
        age = GaugeMetricFamily(
            "tavus_callbacks_oldest_pending_event_age_seconds",
            "Age of the oldest event not processed yet, waiting in the events queue or stored "
            "and waiting for another attempt (0: none).",
        )
        age.add_metric([], max(0.0, now - min(oldest)) if oldest else 0.0)
        yield age
        yield up

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_client(self._settings)
        return self._redis

    def _broker(self, oldest: list[float]) -> Iterator[Metric]:
        client = self._client()
        depths = queue_depths(client)
        tail = client.lindex(EVENTS_QUEUE, -1)  # kombu pushes left, takes right: the oldest
        queued = GaugeMetricFamily(
            "tavus_callbacks_queue_messages",
            "Messages waiting in each Celery queue in Redis.",
            labels=["queue"],
        )
        for name in QUEUES:
            queued.add_metric([name], depths[name])
        yield queued
        yield GaugeMetricFamily(
            "tavus_callbacks_queue_unacked_messages",
            "Messages workers took and have not acked yet (all queues; includes retries "
            "waiting for their countdown).",
            value=depths[UNACKED_KEY],
        )
        received_at = _received_at(tail)
        if received_at is not None:
            oldest.append(received_at)

    def _store(self, state: StoreState, oldest: list[float]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "tavus_callbacks_failed_events",
            "Stored events whose handler kept failing (dead-lettered; `replay --failed`).",
            value=state.failed_events,
        )
        deliveries = GaugeMetricFamily(
            "tavus_callbacks_failed_deliveries",
            "Deliveries that failed for good, by ledger (alert: an alert on one channel).",
            labels=["ledger"],
        )
        for ledger, count in state.failed_deliveries.items():
            deliveries.add_metric([ledger], count)
        yield deliveries
        paused = GaugeMetricFamily(
            "tavus_callbacks_destination_paused",
            "1 while a destination is paused (its deliveries wait; `tavus-callbacks "
            "destinations`), 0 otherwise.",
            labels=["destination"],
        )
        configured = {d.name: False for d in self._settings.forward_destinations}
        for name, is_paused in sorted((configured | state.paused).items()):
            paused.add_metric([name], 1 if is_paused else 0)
        yield paused
        since = state.pending_since
        if since is not None:
            oldest.append(since.replace(tzinfo=since.tzinfo or UTC).timestamp())

    def _spool(self) -> Iterator[Metric]:
        files = spooled_files(self._settings.spool_dir)
        yield GaugeMetricFamily(
            "tavus_callbacks_spool_events",
            "Events waiting in this host's spool (SPOOL_DIR) for Redis to take them.",
            value=len(files),
        )
        yield GaugeMetricFamily(
            "tavus_callbacks_spool_oldest_age_seconds",
            "Age of the oldest event in this host's spool (0: empty).",
            value=max(0.0, time.time() - written_at(files[0])) if files else 0.0,
        )


def _received_at(envelope: bytes | None) -> float | None:
    """When the event in a queued PROCESS_EVENT message reached us; None for anything else.

    Every event is queued as ``schemas.broker`` publishes it, its body as is. A retry Celery
    itself sends (base64) gives None: it waits out its countdown in a worker, unacked, and is
    in the queue only for the instant before a worker takes it."""
    if envelope is None:
        return None
    try:
        return float(orjson.loads(orjson.loads(envelope)["body"])[0][0]["received_at"])
    except (orjson.JSONDecodeError, ValueError, KeyError, IndexError, TypeError):
        return None
