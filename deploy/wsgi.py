"""The WSGI entry points gunicorn serves (run from the project root):

- ``deploy.wsgi:app``: the web process. The receiver, ``/metrics``, and beside them, unless
  ``CONSOLE_ENABLED=false``, the console under ``/api`` and ``/console``. The receiver never
  imports the store: the two apps meet only here.
- ``deploy.wsgi:console_app``: the console alone (the Procfile's ``console`` process).

Each is built on first use, in each gunicorn worker after the fork (``preload_app`` is off), so
importing this module for one never builds the other. It is built from the settings
``deploy/gunicorn.conf.py`` read in the master; served without that file, from the environment,
read then. In the web process the console itself waits for its first request
(``BuiltOnFirstRequest``), and ``/metrics`` imports the store at its first scrape: a worker that
serves callbacks alone holds neither.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterable
from typing import Any

from schemas.settings import Settings

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

CONSOLE_PREFIXES = ("/api", "/console")


class PathRouter:
    """Send a request to the app mounted at the start of its path, else to ``default``.

    Paths are kept whole (no SCRIPT_NAME shift), so each app routes as if served alone. A
    callback pays one ``str.startswith`` with a tuple (measured: well under a microsecond).
    """

    def __init__(self, default: WSGIApp, mounts: dict[str, WSGIApp]) -> None:
        self.default = default
        self.mounts = mounts
        self._prefixes = tuple(mounts)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(self._prefixes):
            for prefix, app in self.mounts.items():
                if path == prefix or path.startswith(prefix + "/"):
                    return app(environ, start_response)
        return self.default(environ, start_response)


class BuiltOnFirstRequest:
    """A WSGI app built when its first request comes, then served as is.

    The console mounted in the web process: its API, pages, SQLAlchemy and the store cost a
    web worker ~20 MiB (of ~60 MiB with them), which a worker serving only callbacks would hold
    for nothing. The first console request in each worker pays the build (a few hundred ms).
    A build that fails answers that request with an error and is tried again on the next one.
    """

    def __init__(self, build: Callable[[], WSGIApp]) -> None:
        self._build = build
        self._app: WSGIApp | None = None
        self._lock = threading.Lock()  # threaded workers (gthread) build it once

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        app = self._app
        if app is None:
            with self._lock:
                if self._app is None:
                    self._app = self._build()
                    gc.freeze()  # as in __getattr__ below: it lives as long as the process
                app = self._app
        return app(environ, start_response)


def build_web(settings: Settings) -> WSGIApp:
    from console.metrics import create_metrics_app
    from receiver import create_app as create_receiver

    receiver = create_receiver(settings)
    # /metrics is served whatever CONSOLE_ENABLED says: monitoring is not the console.
    mounts: dict[str, WSGIApp] = {"/metrics": create_metrics_app(settings)}
    if settings.console_enabled:
        console = BuiltOnFirstRequest(lambda: build_console(settings))
        mounts.update(dict.fromkeys(CONSOLE_PREFIXES, console))
    return PathRouter(receiver, mounts)


def build_console(settings: Settings) -> WSGIApp:
    from console import create_app as create_console

    return create_console(settings)


settings_read_at_start: Settings | None = None  # set by deploy/gunicorn.conf.py
_BUILT: dict[str, WSGIApp] = {}
_BUILDERS = {"app": build_web, "console_app": build_console}


def __getattr__(name: str) -> WSGIApp:
    """``deploy.wsgi:app`` and ``deploy.wsgi:console_app``, each built once, on first use."""
    if name not in _BUILDERS:
        raise AttributeError(name)
    if name not in _BUILT:
        _BUILT[name] = _BUILDERS[name](settings_read_at_start or Settings.from_env())
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's scans. The console's imports (SQLAlchemy, Celery...) would otherwise make
        # every full collection, which the intake's allocations trigger, scan them again.
        gc.freeze()
    return _BUILT[name]
