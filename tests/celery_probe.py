"""A Celery app configured exactly as the workers' (``workers.celery_app.create_celery``), whose
``PROCESS_EVENT`` task only records what the worker made of the message: the format test's
real worker (``celery -A tests.celery_probe worker``, which builds it from the environment)."""

from __future__ import annotations

import os
import time

import orjson
import redis
from celery import Celery

from schemas.messages import PROCESS_EVENT
from schemas.settings import Settings
from workers.celery_app import app_from_env, create_celery

RECORDED = "probe:recorded"
HOLD = "probe.hold"  # a task that records its id, then runs PROBE_HOLD_SECONDS
HELD = "probe:held"


def record(self, message: dict) -> None:
    """Record the request as the task saw it; retry once, through Celery's own retry."""
    request = self.request
    seen = {
        "id": request.id,
        "args": request.args,
        "retries": request.retries,
        "eta": request.eta,
        "routing_key": (request.delivery_info or {}).get("routing_key"),
        "argsrepr": request.argsrepr,
    }
    redis_url = self.app.conf.tavus_settings.redis_url
    redis.Redis.from_url(redis_url).rpush(RECORDED, orjson.dumps(seen))
    if request.retries == 0:
        raise self.retry(countdown=0)


def hold(self, *args: object) -> None:
    """Record the task's id, then keep its pool process (and its message unacked) a while."""
    redis.Redis.from_url(self.app.conf.tavus_settings.redis_url).rpush(HELD, self.request.id)
    time.sleep(float(os.environ.get("PROBE_HOLD_SECONDS", "0")))


def create_probe(settings: Settings) -> Celery:
    app = create_celery(settings)
    app.conf.include = []  # the probe tasks instead of the real ones
    app.task(name=PROCESS_EVENT, bind=True, max_retries=1)(record)
    app.task(name=HOLD, bind=True)(hold)
    return app


__getattr__ = app_from_env(create_probe, globals())
