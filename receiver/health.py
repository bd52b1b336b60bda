"""Probes for load balancers: ``/healthz`` answers without I/O, ``/readyz`` asks Redis."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    intake = current_app.extensions["intake"]
    try:
        intake.publisher.ping()
    except redis.RedisError as exc:
        return jsonify(status="unavailable", redis=f"unreachable: {type(exc).__name__}"), 503
    return jsonify(status="ready", redis="ok"), 200
