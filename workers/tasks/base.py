"""The one task base: every task of ``workers/tasks`` is a ``StageTask``, so that its body is its
work only. The base owns what every task did by hand: the settings and the store, the one retry
policy (``workers.retry``) with the attempts of its stage, the reschedule, the dead-letter metric.

A task names its ``stage`` (the metrics' label, the logs' prefix) and the setting that bounds its
attempts at whatever escapes its work other than an infrastructure fault (a bug, a bad row):
``MAX_EVENT_ATTEMPTS`` for events and the stages that have no bound of their own,
``ALERT_DELIVERY_ATTEMPTS`` for alerts, ``HOOK_MAX_ATTEMPTS`` for hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from celery import Task

from schemas.settings import Settings
from workers import metrics, retry
from workers.celery_app import celery
from workers.store.db import Store, store_for

T = TypeVar("T")


class StageTask(Task):
    """A Celery task run under the one policy: acked late, retried by ``workers.retry`` only."""

    acks_late = True
    max_retries = None  # the attempts are counted by the policy (a header) or in the store
    stage: ClassVar[str] = "tasks"
    attempts_setting: ClassVar[str] = "max_event_attempts"

    @property
    def settings(self) -> Settings:
        return self.app.conf.tavus_settings

    @property
    def store(self) -> Store:
        return store_for(self.settings.database_url, self.settings.cipher)

    def max_attempts(self) -> int:
        """How many times this stage's work may fail (not the infrastructure) before its dead
        letter."""
        return int(getattr(self.settings, self.attempts_setting))

    def guarded(
        self,
        subject: str,
        work: Callable[[], T],
        dead_letter: Callable[[BaseException, int], Any],
    ) -> T | Any:
        """Run ``work`` for ``subject`` under the retry policy; ``dead_letter`` at the end."""
        return retry.run(
            self, self.stage, subject, work, dead_letter, self.settings, self.max_attempts()
        )

    def again_in(self, seconds: float) -> None:
        """Run this task again in ``seconds`` (its attempts are counted elsewhere); the caller
        returns after it."""
        retry.again(self, seconds, self.settings)
        metrics.task_retried(self.name)

    def dead_lettered(self) -> None:
        metrics.dead_letter(self.name)

    def carried(self) -> dict[str, Any] | None:
        """What the try before this one asked it to know (``workers.errors.Transient.carry``)."""
        return retry.carried(self)


def stage_task(
    name: str, stage: str, attempts_setting: str = "max_event_attempts", **options: Any
) -> Callable[[Callable[..., T]], StageTask]:
    """Register a task body as a ``StageTask`` of ``stage``, bounded by ``attempts_setting``."""
    return celery.task(
        name=name,
        bind=True,
        base=StageTask,
        stage=stage,
        attempts_setting=attempts_setting,
        **options,
    )
