"""The workers' yardstick: the production Celery app with a task that does nothing.

It registers under the real task's name, so it consumes the very messages the receiver
publishes, through the same broker settings (acks_late, prefetch 1, JSON); ``workers / noop``
says what storing and handling an event costs beyond Celery's own per-task work.
Run as ``celery -A bench.noop worker``.
"""

from __future__ import annotations

from typing import Any

from schemas.messages import PROCESS_EVENT
from schemas.settings import Settings
from workers.celery_app import create_celery

celery = create_celery(Settings.from_env())
celery.conf.include = []  # not the real task modules: this name must be the no-op's


@celery.task(name=PROCESS_EVENT, bind=True, acks_late=True)
def process_event(self: Any, message: dict[str, Any]) -> str:
    return "noop"
