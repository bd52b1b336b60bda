"""The workers' yardstick: the production Celery app with a task that does nothing.

It registers under the real task's name, so it consumes the very messages the receiver
publishes, through the same broker settings (acks_late, prefetch 1, JSON); ``workers / noop``
says what storing and handling an event costs beyond Celery's own per-task work.
Run as ``celery -A bench.noop worker``; the app is built then, from the environment.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from schemas.messages import PROCESS_EVENT
from schemas.settings import Settings
from workers.celery_app import app_from_env, create_celery


def process_event(self: Any, message: dict[str, Any]) -> str:
    return "noop"


def create_noop(settings: Settings) -> Celery:
    app = create_celery(settings)
    app.conf.include = []  # not the real task modules: this name must be the no-op's
    app.task(name=PROCESS_EVENT, bind=True, acks_late=True)(process_event)
    return app


__getattr__ = app_from_env(create_noop, globals())
