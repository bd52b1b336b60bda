"""gunicorn settings for the receiver (``web`` in the Procfile).

The intake is I/O-light (one Redis round trip per request), so plain sync workers serve it best;
the load balancer in front (Heroku's router, an ingress) buffers slow clients. A sync worker
idles while it waits for Redis (0.1 ms locally, about 1 ms over a network), so two per core keep
the cores busy: measured on two cores, four workers answer 10-15% more than two, and more add
only memory (~40 MB each) and context switches. Everything here can be overridden by
GUNICORN_CMD_ARGS or WEB_CONCURRENCY.
"""

import multiprocessing
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
worker_class = "sync"
# Heroku sends SIGTERM and SIGKILLs 30 s later: finish in-flight requests well before that.
graceful_timeout = 20
timeout = 30
keepalive = 5
# The app (and its Redis pool) is built in each worker after the fork, never shared.
preload_app = False
# No access log: the path may carry the callback token, and the intake logs what matters.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# gunicorn's runtime control socket sits at one fixed path per user; several instances on one
# machine (dev, tests, a benchmark) would fight over it, and nothing here needs it.
control_socket_disable = True
