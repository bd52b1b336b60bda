"""``POST /callbacks[/<token>]``: the hot path, as a few named steps.

authenticate (401) -> parse a JSON object (400) -> classify and validate (422 is still queued,
as quarantined) -> claim the key and enqueue in one round trip (200 duplicate / 202 accepted).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, current_app, request

from schemas.classify import UnknownKind, Verdict, classify
from schemas.messages import EventMessage, event_message

from .auth import TokenChecker
from .errors import BadKind, NotJSONObject, QueueUnavailable
from .publisher import Publisher

log = logging.getLogger(__name__)

bp = Blueprint("intake", __name__)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]

    def to_response(self) -> Response:
        return Response(orjson.dumps(self.body), status=self.status, mimetype="application/json")


class Intake:
    """Everything one callback goes through, free of Flask so it reads (and tests) plainly."""

    def __init__(self, tokens: TokenChecker, publisher: Publisher) -> None:
        self.tokens = tokens
        self.publisher = publisher

    def accept(self, raw: bytes, presented: str | None, hint: str | None) -> Reply:
        self.tokens.authenticate(presented)
        body = parse_object(raw)
        received_at = time.time()
        verdict = _classify(body, raw, received_at, hint)
        message = _message(verdict, raw, received_at)
        try:
            first_id = self.publisher.publish(message)
        except redis.RedisError as exc:
            log.error("queue unavailable, event %s not accepted: %s", message["event_id"], exc)
            raise QueueUnavailable("the queue cannot take events right now; retry") from exc
        return _reply(verdict, first_id or message["event_id"], repeat=first_id is not None)


def parse_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotJSONObject(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise NotJSONObject(f"body must be a JSON object, not {type(body).__name__}")
    return body


def _classify(body: dict[str, Any], raw: bytes, received_at: float, hint: str | None) -> Verdict:
    try:
        return classify(body, raw, received_at, hint)
    except UnknownKind as exc:
        raise BadKind(str(exc)) from exc


def _message(verdict: Verdict, raw: bytes, received_at: float) -> EventMessage:
    return event_message(verdict, raw, received_at, source="callback")


def _reply(verdict: Verdict, event_id: str, repeat: bool) -> Reply:
    if not verdict.valid:
        return Reply(
            422,
            {
                "status": "quarantined",
                "event_id": event_id,
                "error": "not_a_tavus_callback",
                "message": "kept for inspection, but this body is no Tavus callback",
                "errors": verdict.errors,
            },
        )
    if repeat:
        return Reply(200, {"status": "duplicate", "event_id": event_id})
    return Reply(202, {"status": "accepted", "event_id": event_id})


@bp.post("/callbacks")
@bp.post("/callbacks/<token>")
def receive(token: str | None = None) -> Response:
    presented = token
    if presented is None and request.authorization is not None:
        presented = request.authorization.password
    intake: Intake = current_app.extensions["intake"]
    reply = intake.accept(request.get_data(cache=False), presented, request.args.get("kind"))
    return reply.to_response()
