"""A Celery app configured exactly as the workers' (``workers.celery_app.create_celery``), whose
``PROCESS_EVENT`` task only records what the worker made of the message: the format test's
real worker (``celery -A tests.celery_probe worker``)."""

from __future__ import annotations

import orjson
import redis

from schemas.messages import PROCESS_EVENT
from schemas.settings import Settings
from workers.celery_app import create_celery

settings = Settings.from_env()
celery = create_celery(settings)
celery.conf.include = []  # the probe task instead of the real ones
RECORDED = "probe:recorded"


@celery.task(name=PROCESS_EVENT, bind=True, max_retries=1)
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
    redis.Redis.from_url(settings.redis_url).rpush(RECORDED, orjson.dumps(seen))
    if request.retries == 0:
        raise self.retry(countdown=0)
