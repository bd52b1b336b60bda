"""The console: a read API under ``/api/v1`` and server-rendered pages under ``/console``,
over the event store and Redis. ``deploy/wsgi.py`` composes it with the receiver.

Importing the package imports none of the app: ``console.metrics`` (served by every web worker)
stays free of the API, the pages and SQLAlchemy until something builds the console."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from schemas.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The console's Flask app (``console.app.create_app``)."""
    from .app import create_app as create

    return create(settings)


__all__ = ["create_app"]
