"""``POST /callbacks[/<token>]``: the hot path, as a few named steps.

source allowlist (403) -> authenticate: a signed tool delivery by its signature, anything else
by its token (401) -> parse a JSON object (400) -> classify and
validate (422 is still queued, as quarantined) -> claim the key and enqueue in one round trip
(200 duplicate / 202 accepted); when Redis cannot take it, the local spool (202 spooled), and only
when neither can, 503.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from schemas.callbacks.tool import TOOL
from schemas.classify import UnknownKind, Verdict, classify
from schemas.messages import EventMessage, event_message

from . import metrics
from .auth import SignatureChecker, TokenChecker
from .deadlines import ReadDeadlines
from .errors import BadKind, BodyTimeout, NotJSONObject, QueueUnavailable
from .publisher import Publisher
from .sources import SourceAllowlist
from .spool import Drainer

log = logging.getLogger(__name__)

bp = Blueprint("intake", __name__)

SIGNATURE_HEADER = "X-Tavus-Signature"


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    kind: str | None = None  # the callback kind, for the metrics' label

    def to_response(self) -> Response:
        return Response(orjson.dumps(self.body), status=self.status, mimetype="application/json")


@dataclass(frozen=True)
class Intake:
    """Everything one callback goes through, free of Flask so it reads (and tests) plainly."""

    tokens: TokenChecker
    publisher: Publisher
    drainer: Drainer
    sources: SourceAllowlist
    deadlines: ReadDeadlines
    signatures: SignatureChecker

    def accept(
        self, raw: bytes, presented: str | None, hint: str | None, signature: str | None = None
    ) -> Reply:
        if signature is None:
            self.tokens.authenticate(presented)
        else:
            # Tavus signs only tool deliveries: a signed body is one, token or not.
            self.signatures.verify(raw, signature)
            hint = hint or TOOL
        body = parse_object(raw)
        received_at = time.time()
        verdict = _classify(body, raw, hint)
        message = event_message(verdict, raw, received_at, source="callback")
        if not self.drainer.broker_suspect():
            try:
                first_id = self.publisher.publish(message)
            except redis.RedisError as exc:
                log.warning(
                    "queue unavailable (%s); spooling event %s",
                    exc,
                    message["event_id"],
                    extra=log_context(message),
                )
                metrics.PUBLISH_FAILURES.inc()
                self.drainer.note_failure()
            else:
                return _reply(verdict, first_id or message["event_id"], repeat=first_id is not None)
        self._spool(message)
        return _reply(verdict, message["event_id"], repeat=False, spooled=True)

    def _spool(self, message: EventMessage) -> None:
        try:
            self.drainer.spool.put(message)
        except OSError as exc:
            log.error(
                "cannot spool event %s either, not accepted: %s",
                message["event_id"],
                exc,
                extra=log_context(message),
            )
            metrics.SPOOL_WRITES.labels("failed").inc()
            raise QueueUnavailable("neither queue nor spool can take events; retry") from exc
        metrics.SPOOL_WRITES.labels("written").inc()
        self.drainer.spooled()


def parse_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotJSONObject(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise NotJSONObject(f"body must be a JSON object, not {type(body).__name__}")
    return body


def _classify(body: dict[str, Any], raw: bytes, hint: str | None) -> Verdict:
    try:
        return classify(body, raw, hint)
    except UnknownKind as exc:
        raise BadKind(str(exc)) from exc


def _reply(verdict: Verdict, event_id: str, repeat: bool, spooled: bool = False) -> Reply:
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
            verdict.kind,
        )
    if repeat:
        return Reply(200, {"status": "duplicate", "event_id": event_id}, verdict.kind)
    status = "spooled" if spooled else "accepted"
    return Reply(202, {"status": status, "event_id": event_id}, verdict.kind)


def read_body(deadlines: ReadDeadlines) -> bytes:
    """The request body, within the body deadline when served by gunicorn (408 past it)."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return _whole_body()
    late = f"the body did not arrive within {deadlines.seconds:g} s"
    with deadlines.watch(sock) as watch:
        try:
            raw = _whole_body()
        except (ClientDisconnected, OSError) as exc:
            if watch.expired:
                raise BodyTimeout(late) from exc
            raise
    if watch.expired:  # a chunked body cut short by the deadline reads as a shorter body
        raise BodyTimeout(late)
    return raw


def _whole_body() -> bytes:
    raw = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A chunked body (no Content-Length) is cut at the limit without a word from werkzeug: one
    # more byte means it was longer, and a truncated body must never pass for the whole one.
    at_limit = request.content_length is None and limit is not None and len(raw) >= limit
    if at_limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return raw


@bp.post("/callbacks")
@bp.post("/callbacks/<token>")
def receive(token: str | None = None) -> Response:
    intake: Intake = current_app.extensions["intake"]
    intake.sources.check(request.environ)
    presented = token
    if presented is None and request.authorization is not None:
        presented = request.authorization.password
    raw = read_body(intake.deadlines)
    signature = request.headers.get(SIGNATURE_HEADER)
    reply = intake.accept(raw, presented, request.args.get("kind"), signature)
    metrics.classified(reply.kind)
    return reply.to_response()


def log_context(message: EventMessage) -> dict[str, str | None]:
    """The ids a log line about ``message`` carries (JSON logs: schemas/logs.py)."""
    return {"event_id": message["event_id"], "conversation_id": message.get("conversation_id")}
