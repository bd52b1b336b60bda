"""The intake's yardstick: a bare Flask endpoint that LPUSHes the body to Redis and answers 202.

No auth, no parsing, no dedup: what any Flask receiver costs under the same gunicorn config,
so ``intake / baseline`` says what our own steps cost. Served as ``bench.baseline:create_app()``.
"""

from __future__ import annotations

import redis
from flask import Flask, Response, request

from schemas.settings import Settings

BASELINE_QUEUE = "bench:baseline"
_ACCEPTED = b'{"status": "accepted"}'


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2.0)
    app = Flask("baseline")

    @app.post("/callbacks/<token>")
    def receive(token: str) -> Response:
        client.lpush(BASELINE_QUEUE, request.get_data())
        return Response(_ACCEPTED, status=202, mimetype="application/json")

    return app
