"""The Celery app: broker, queues, routing and the delivery guarantees every task relies on.

``celery -A workers.celery_app worker`` (or ``beat``) asks this module for ``celery``: the app
is built then, from the environment, once (``app_from_env``). Importing the module reads
nothing; Celery's ``-A`` takes an app instance, not a factory, hence the lazy attribute.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from schemas.messages import PURGE, QUEUES, RECONCILE, TASK_ROUTES
from schemas.settings import Settings, SettingsError, prepare_multiprocess_dir
from workers import destinations, extensions, logs, traces

log = logging.getLogger(__name__)

TASK_MODULES = (
    "workers.tasks.events",
    "workers.tasks.storage",
    "workers.tasks.alerts",
    "workers.tasks.reconcile",
    "workers.tasks.forward",
    "workers.tasks.lifecycle",
)


def create_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise SettingsError("REDIS_URL is not set (tavus-callbacks dev starts a Redis for you)")
    destinations.check(settings)  # a FORWARD_<NAME>_* no type takes stops the worker at start
    extensions.load(settings)  # TAVUS_EXTENSIONS, and the routes and locations checked
    app = Celery("tavus_callbacks", broker=settings.redis_url, include=list(TASK_MODULES))
    app.conf.update(
        # kombu's Redis transport with a reconnect crash fixed (see workers/broker.py); on the
        # primary the sentinels name when REDIS_SENTINELS is set.
        broker_transport=broker_transport(settings),
        # Celery's prefork pool, whose cold shutdown cannot hang on a job half written to a pool
        # process (see workers/prefork.py).
        worker_pool="workers.prefork:TaskPool",
        # Publishing routes by queue name (Celery sends to the anonymous exchange), so no
        # message depends on kombu's `_kombu.binding.*` keys: after a Redis wipe, routing works.
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_routes=TASK_ROUTES,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # At-least-once: ack after the task ran, and hand back a task whose process died.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task stopped by its hard time limit goes back to its queue too (Celery would ack it
        # and lose it): its delivery, still claimed, is then attempted again after its lease.
        task_acks_on_timeout=False,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings),
        # Heroku (and Kubernetes) send SIGTERM, then SIGKILL 30 s later. With
        # REMAP_SIGTERM=SIGQUIT (the Procfile) SIGTERM starts a cold shutdown that first gives
        # running tasks this long, then cancels them and hands their messages back to Redis.
        worker_soft_shutdown_timeout=settings.worker_soft_shutdown_seconds,
        worker_hijack_root_logger=False,
        beat_schedule=periodic_tasks(settings),
        # Task events cost the worker's main process a Redis round trip or two per task, paid
        # for nothing unless a monitor listens; Flower turns them on when it starts watching.
        worker_send_task_events=settings.worker_task_events,
        task_send_sent_event=settings.worker_task_events,
    )
    if settings.redis_url.startswith("rediss://"):
        # Named explicitly: with our transport class the scheme alone no longer turns TLS on.
        verify = ssl.CERT_REQUIRED if settings.redis_tls_verify else ssl.CERT_NONE
        app.conf.broker_use_ssl = {"ssl_cert_reqs": verify}
    app.conf.tavus_settings = settings
    logs.install(app, settings)
    traces.install(app)  # spans, when OTEL_EXPORTER_OTLP_ENDPOINT asks for them
    signals.before_task_publish.connect(_EtaCap(settings.max_countdown_seconds), weak=False)
    if settings.worker_metrics_port is not None:
        signals.import_modules.connect(_MetricsDirectory(settings), sender=app, weak=False)
    return app


class _MetricsDirectory:
    """Export the worker's own multiprocess metrics directory (workers/metrics.py) before
    Celery imports the task modules, and so prometheus_client, and before the pool forks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory: str | None = None

    def __call__(self, **_: Any) -> None:
        if self.directory is None:
            self.directory = prepare_multiprocess_dir(self.settings, "worker")


def transport_options(settings: Settings) -> dict[str, Any]:
    """How kombu's Redis transport takes back messages a dead worker held.

    A message fetched and never acked is restored to its queue once it is older than the
    visibility timeout, by a sweep every worker runs; with one scan per sweep (throttle 1) a
    killed worker's messages are back within ``visibility_timeout + restore_interval`` seconds.
    """
    timeout = settings.visibility_timeout_seconds
    sentinel = {"tavus_settings": settings} if settings.redis_sentinels else {}
    return {
        **sentinel,  # the Sentinel channel builds its pools with schemas.broker.redis_client
        "visibility_timeout": timeout,
        "unacked_restore_interval": restore_interval(timeout),
        "unacked_restore_throttle": 1,
        # A worker killed during a sweep leaves the sweep's mutex behind until it expires.
        "unacked_mutex_expire": min(300, timeout),
    }


def broker_transport(settings: Settings) -> str:
    if settings.redis_sentinels:
        return "workers.broker:SentinelTransport"
    return "workers.broker:Transport"


def restore_interval(visibility_timeout: int) -> int:
    """Seconds between sweeps for overdue messages: often enough, cheap enough (one ZRANGE)."""
    return max(1, min(10, visibility_timeout // 10))


def periodic_tasks(settings: Settings) -> dict[str, dict[str, Any]]:
    """What `celery beat` sends. Reconciliation needs the Tavus API key; the purge a retention
    (`RETENTION_DAYS=0` keeps everything)."""
    schedule = {}
    if settings.tavus_api_key:
        schedule["reconcile-missed-callbacks"] = _every(
            RECONCILE, settings.reconcile_interval_seconds
        )
    if settings.retention_days:
        schedule["purge-expired"] = _every(PURGE, settings.purge_interval_seconds)
    return schedule


def _every(task: str, seconds: float) -> dict[str, Any]:
    # A run not started within one period is dropped: the next one does the same work.
    return {"task": task, "schedule": float(seconds), "options": {"expires": seconds}}


class _EtaCap:
    """A guard: no scheduled task (retries, countdowns) past half the visibility timeout.

    A task with an ETA waits in the worker that fetched it, unacked; if it waited longer than the
    visibility timeout, Redis would hand the same message to another worker as well. Every
    retry comes from ``workers.retry``, which caps its delays already: reaching this guard means
    some code scheduled a countdown of its own, and it says so.
    """

    def __init__(self, max_countdown_seconds: float) -> None:
        self.max_countdown = timedelta(seconds=max_countdown_seconds)

    def __call__(self, sender: str | None = None, headers: dict | None = None, **_: Any) -> None:
        eta = (headers or {}).get("eta")
        if not eta:
            return
        latest = datetime.now(UTC) + self.max_countdown
        wanted = datetime.fromisoformat(eta)
        if wanted.tzinfo is None:
            wanted = wanted.replace(tzinfo=UTC)
        if wanted > latest:
            log.error(
                "task %s scheduled %s, past half the visibility timeout (a countdown that did "
                "not come from workers.retry); moved to %s",
                sender,
                wanted.isoformat(),
                latest.isoformat(),
            )
            headers["eta"] = latest.isoformat()


def app_from_env(build: Callable[[Settings], Celery], namespace: dict[str, Any]) -> Any:
    """A module ``__getattr__`` giving ``celery -A <module>`` its app, built on first use.

    That first use is the worker's (or beat's) entry point: its one read of the environment.
    The app is then kept in ``namespace``, so the task modules' ``from ... import celery`` and
    Celery itself get the same one.
    """

    def __getattr__(name: str) -> Celery:
        if name != "celery":
            raise AttributeError(name)
        namespace["celery"] = build(Settings.from_env())
        return namespace["celery"]

    return __getattr__


__getattr__ = app_from_env(create_celery, globals())
