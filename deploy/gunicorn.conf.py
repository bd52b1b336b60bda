"""gunicorn settings for the receiver (``web`` in the Procfile).

The intake is I/O-light (one Redis round trip per request), so plain sync workers, one or two
per core, serve it best; the load balancer in front (Heroku's router, an ingress) buffers slow
clients. Everything here can be overridden by GUNICORN_CMD_ARGS or WEB_CONCURRENCY.
"""

import multiprocessing
import shutil

from gunicorn.glogging import Logger
from gunicorn.workers.sync import SyncWorker

from deploy import wsgi
from schemas.settings import Settings, prepare_multiprocess_dir

# The web process's one read of its settings, in gunicorn's master: the workers fork with them,
# and build their app from them (deploy/wsgi.py) instead of reading the environment again.
_settings = wsgi.settings_read_at_start = Settings.from_env()

# Metrics: every worker counts into files in one directory that /metrics adds up
# (prometheus_client's multiprocess mode, set up for gunicorn as its documentation says). The
# directory is exported and wiped here, in the master, before anything imports prometheus_client
# (importing the receiver does, and the workers inherit the master's modules), and each worker
# that exits is marked dead (child_exit below) so its live gauges stop counting.
_metrics_dir = prepare_multiprocess_dir(_settings, "web")

from receiver.deadlines import ReadDeadlines  # noqa: E402  (after the metrics directory)

bind = f"0.0.0.0:{_settings.port}"
# One sync worker per core: with Redis local the intake is CPU-bound (measured by `tavus-callbacks
# bench` on two cores: four workers answer 3-4% more at saturation, at a higher p99). With Redis
# a network hop away, as on Heroku or Kubernetes, each request waits a round trip with its core
# idle: set WEB_CONCURRENCY = 2 x cores there (measured at 0.5 ms each way, two cores: 4 workers
# answered 0.79-0.82 of a bare Flask endpoint, p99 ~5 ms at 1,000 req/s). "Sizing" in
# docs/operations.md has the worker side (CELERY_WORKER_CONCURRENCY, worker dynos).
workers = _settings.web_concurrency or multiprocessing.cpu_count()
# Heroku sends SIGTERM and SIGKILLs 30 s later: finish in-flight requests well before that.
graceful_timeout = 20
timeout = 30
keepalive = 5
# The app (and its Redis pool) is built in each worker after the fork, never shared.
preload_app = False
# No access log: the path may carry the callback token, and the intake logs what matters.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level


class RedactingLogger(Logger):
    """gunicorn's logger with the token scrubber on its handlers, in LOG_FORMAT.

    gunicorn's own error lines quote request paths ("Error handling request /callbacks/..."),
    invalid request lines and tracebacks; every one passes schemas.redaction first. A logger
    class rather than ``logconfig_dict``, which would switch gunicorn's access log back on.
    """

    def setup(self, cfg):
        super().setup(cfg)
        from schemas.logs import JsonFormatter
        from schemas.redaction import RedactingFilter

        redactor = RedactingFilter(_settings.secrets())
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(redactor)
                if _settings.log_format == "json":
                    handler.setFormatter(JsonFormatter())


logger_class = RedactingLogger
# gunicorn's runtime control socket sits at one fixed path per user; several instances on one
# machine (dev, tests, a benchmark) would fight over it, and nothing here needs it.
control_socket_disable = True


# A sync worker reads the request line and headers with no deadline: a client sending them a
# byte at a time holds the worker until `timeout` kills it, and the kill answers 500. The intake
# bounds the body itself (BODY_TIMEOUT_SECONDS, then 408); this bounds the whole read, headers
# included, a little later and always before `timeout`: the read side is shut, the read ends, and
# gunicorn drops the connection as a client disconnect.
_REQUEST_DEADLINE = min(2 * _settings.body_timeout_seconds, timeout - 5)
_deadlines = ReadDeadlines(_REQUEST_DEADLINE)


class DeadlineSyncWorker(SyncWorker):
    def handle(self, listener, client, addr):
        with _deadlines.watch(client):
            super().handle(listener, client, addr)


worker_class = DeadlineSyncWorker


def post_worker_init(worker):
    # gunicorn's "Booting worker" comes before the app is built (the receiver's, or in the
    # console process the console's imports, a second or two; in web the console waits for its
    # first request); this line says the worker takes requests, for whoever waits on it.
    worker.log.info("Worker serving (pid: %s)", worker.pid)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if not _settings.prometheus_multiproc_dir:  # the temporary directory made for this start
        shutil.rmtree(_metrics_dir, ignore_errors=True)
