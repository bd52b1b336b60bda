"""``tavus.forward.deliver`` (queue ``forward``) and ``tavus.hooks.run`` (queue ``hooks``): one
task per (event, destination), each retried on its own; the hooks of TAVUS_HOOKS, loaded once
when a worker starts (a module that cannot be imported stops it), and then what destinations
need before their first event (an AMQP exchange declared)."""

from __future__ import annotations

import logging

from celery import signals

from schemas.messages import FORWARD_EVENT, RAISE_ALERT, RUN_HOOK
from workers import forwarding, hooks, metrics
from workers.celery_app import celery
from workers.destinations import configured, prepare
from workers.destinations.hooks import hard_time_limit
from workers.errors import TavusError
from workers.store.db import store_for
from workers.tasks.base import StageTask, stage_task
from workers.tasks.events import send_task

log = logging.getLogger(__name__)


@signals.worker_init.connect
def load_hooks(**_: object) -> None:
    """Import TAVUS_HOOKS before the pool forks, so every process has the same hooks."""
    settings = celery.conf.tavus_settings
    try:
        names = hooks.load(settings.tavus_hooks)
    except hooks.HookModuleError as exc:
        log.critical("%s", exc)
        raise SystemExit(f"worker not started: {exc}") from None
    if names:
        log.info("hooks loaded: %s", ", ".join(names))
    try:
        prepare(settings)
    except TavusError as exc:  # a broker down now: each delivery prepares again, or fails
        log.warning("a destination is not ready yet: %s", exc)
    try:
        store = store_for(settings.database_url, settings.cipher)
        forwarding.register_destinations(store, settings)
    except Exception as exc:  # a boundary: the store down now; the first delivery makes them
        log.warning("destination states not recorded at start: %s", type(exc).__name__)


def _deliver(task: StageTask, event_id: str, destination: str, source: str) -> str:
    """A destination's own failures are decided by ``forwarding`` (attempts in the store);
    whatever escapes it (the store, a bug) goes through the one retry policy."""
    settings, store = task.settings, task.store
    outcome = task.guarded(
        f"{event_id} to {destination}",
        lambda: forwarding.deliver(store, event_id, destination, source, settings, task.carried()),
        lambda exc, _failures: forwarding.give_up(store, event_id, destination, exc),
    )
    if outcome is None:  # the dead letter itself could not be recorded (logged CRITICAL)
        return "unrecorded"
    follow_ups = [(RAISE_ALERT, [alert]) for alert in outcome.alerts]  # paused, resumed
    follow_ups += [(woken["name"], woken["args"]) for woken in outcome.wake]  # next in order
    for name, args in follow_ups:
        try:
            send_task(name, args)
        except Exception as exc:  # a boundary: the delivery is recorded; say what was not sent
            log.error("%s not queued: %s", name, type(exc).__name__)
    if outcome.status in ("delivered", "failed", "retrying"):
        metrics.delivery(destination, outcome.status, configured(settings))
    if outcome.status == "failed":
        task.dead_lettered()
    if outcome.retry_in is not None:
        # The attempts live in the store, so Celery's own retry limit is not needed.
        task.again_in(outcome.retry_in)
    return outcome.status


@stage_task(FORWARD_EVENT, "forward")
def forward_event(
    self: StageTask, event_id: str, destination: str, source: str = "callback"
) -> str:
    return _deliver(self, event_id, destination, source)


# A hook's own time limit (HOOK_TIMEOUT_SECONDS) is a timer around the call; this hard limit is
# the backstop for a hook stuck where no signal reaches it. The message then goes back to its
# queue (task_acks_on_timeout=False) and the delivery is attempted again after its lease.
@stage_task(
    RUN_HOOK,
    "hooks",
    "hook_max_attempts",
    time_limit=hard_time_limit(celery.conf.tavus_settings.hook_timeout_seconds),
)
def run_hook(self: StageTask, event_id: str, destination: str, source: str = "callback") -> str:
    return _deliver(self, event_id, destination, source)
