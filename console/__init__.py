"""The console: a read API under ``/api/v1`` and server-rendered pages under ``/console``,
over the event store and Redis. ``deploy/wsgi.py`` composes it with the receiver."""

from .app import create_app

__all__ = ["create_app"]
