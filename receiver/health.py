"""Probes for load balancers: ``/healthz`` answers without I/O, ``/readyz`` asks Redis.

``/readyz`` stays 200 while events can be taken durably: by Redis, or by the spool while Redis
is down ("degraded"). Taking every web process out of rotation because Redis blinked would turn
a spooled event into a refused connection; it answers 503 only when neither can take events.
It also warns when Redis may evict keys, which would silently drop queued events.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify

from .spool import Spool

bp = Blueprint("health", __name__)

SAFE_EVICTION_POLICY = "noeviction"
POLICY_CACHE_SECONDS = 60.0


class Readiness:
    """What ``/readyz`` reports; the eviction policy is asked at most once a minute."""

    def __init__(self, client: redis.Redis, spool: Spool) -> None:
        self._client = client
        self._spool = spool
        self._policy: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def report(self) -> tuple[dict[str, Any], int]:
        report: dict[str, Any] = {"status": "ready", "redis": "ok", "warnings": []}
        try:
            self._client.ping()
        except redis.RedisError as exc:
            report["redis"] = f"unreachable: {type(exc).__name__}"
        else:
            report["redis_maxmemory_policy"] = policy = self.eviction_policy()
            if policy != SAFE_EVICTION_POLICY:
                report["warnings"].append(_policy_warning(policy))
        spooled = self._spool.size()
        writable = self._spool.writable()
        report["spool"] = {"events": spooled, "writable": writable}
        if spooled:
            report["warnings"].append(f"{spooled} events wait in the spool for Redis")
        if not writable:
            report["warnings"].append("SPOOL_DIR is not writable: in an outage events are refused")
        if report["redis"] != "ok":
            report["status"] = "degraded" if writable else "unavailable"
        return report, 503 if report["status"] == "unavailable" else 200

    def eviction_policy(self) -> str:
        """The server's ``maxmemory-policy``; "unknown" where CONFIG is disabled (managed Redis)."""
        with self._lock:
            now = time.monotonic()
            if self._policy is None or now - self._policy[0] > POLICY_CACHE_SECONDS:
                self._policy = (now, self._ask_policy())
            return self._policy[1]

    def _ask_policy(self) -> str:
        try:
            answer = self._client.config_get("maxmemory-policy")
        except redis.ResponseError:  # CONFIG renamed away or not permitted
            return "unknown"
        policy = answer.get("maxmemory-policy") or answer.get(b"maxmemory-policy")
        if isinstance(policy, bytes):
            policy = policy.decode()
        return policy or "unknown"


def _policy_warning(policy: str) -> str:
    if policy == "unknown":
        return (
            "cannot read Redis's maxmemory-policy (CONFIG disabled?): make sure it is noeviction, "
            "or queued events may be evicted"
        )
    return f"Redis maxmemory-policy is {policy}: queued events may be evicted; set noeviction"


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    readiness: Readiness = current_app.extensions["readiness"]
    report, status = readiness.report()
    return jsonify(report), status
