"""``/api/v1``: the store as JSON, for apps and scripts. Bearer tokens from ``API_TOKENS``;
erasing (``DELETE``) takes one from ``ADMIN_API_TOKENS``.

A list answers ``{"data": [...], "next_cursor": "..."}`` (``null`` on the last page); a single
resource answers the record itself (a conversation is what ``tavus-callbacks conversation
--json`` prints). Errors are ``{"error": ..., "message": ...}`` with 401, 403, 404, 422 or 503.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request

from workers import queries, replay
from workers.store import audit

from . import actions, openapi, reads
from .cursor import BadCursor
from .params import (
    ALERT_ARGS,
    CONVERSATION_ARGS,
    DELIVERY_ARGS,
    EVENT_ARGS,
    ROW_ID,
    BadArgs,
    parse,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def console() -> Any:
    return current_app.extensions["console"]


@bp.before_request
def authenticate() -> Response | None:
    tokens = console().tokens
    if not tokens.configured:
        abort(404)  # no API_TOKENS: the API is off, as if it did not exist
    if request.endpoint == "api.openapi_document":
        return None  # the description is public wherever the API is on
    if not tokens.allows(request):
        response = jsonify({"error": "unauthorized", "message": "a valid bearer token is needed"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="tavus-callbacks"'
        return response
    return None


def _page(reader: Any, schema: Any) -> Response:
    args = parse(schema, request.args)
    with console().store.session() as session:
        try:
            page = reader(session, args)
        except BadCursor as exc:
            raise BadArgs({"cursor": [str(exc)]}) from exc
    return jsonify(page.as_json())


def _one(read: Callable[..., dict[str, Any] | None], *key: str, what: str) -> Response:
    """The record ``read(session, *key)`` finds, or a 404 that names ``what`` was asked for."""
    with console().store.session() as session:
        record = read(session, *key)
    if record is None:
        abort(404, description=f"no {what}")
    return jsonify(record)


def _listed(path: str, reader: Callable[..., Any], schema: Any) -> None:
    """``GET /<path>``: one page of ``reader(session, args)`` (endpoint ``api.<path>``)."""
    bp.add_url_rule(f"/{path}", path, lambda: _page(reader, schema), methods=["GET"])


def _record(kind: str, read: Callable[..., dict[str, Any] | None], *scope: str) -> None:
    """``GET /<kind>s/<<kind>_id>``: the record ``read(session, *scope, id)`` finds, or a 404
    that names it (endpoint ``api.<kind>``)."""

    def show(**path: str) -> Response:
        record_id = path[f"{kind}_id"]
        return _one(read, *scope, record_id, what=f"{kind} {record_id}")

    bp.add_url_rule(f"/{kind}s/<{kind}_id>", kind, show, methods=["GET"])


_listed("events", reads.events_page, EVENT_ARGS)
_record("event", reads.event_record)
_listed("conversations", reads.conversations_page, CONVERSATION_ARGS)
_record("conversation", queries.conversation_view)
_listed("alerts", reads.alerts_page, ALERT_ARGS)
_listed("deliveries", reads.deliveries_page, DELIVERY_ARGS)
for _kind in queries.resource_models():  # replicas/<id>, videos/<id>, documents/<id>
    _record(_kind, queries.resource_record, _kind)


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str) -> Response:
    done = replay_one(event_id)
    _audit("replay", f"event:{event_id}", "done" if done else "nothing")
    if done is None:
        abort(404, description=f"no event {event_id}")
    response = jsonify({**asdict(done), "status": "received"})
    response.status_code = 202
    return response


def replay_one(event_id: str) -> replay.Replayed | None:
    """Reset the event and queue it again (workers/replay.py); None if there is no such event.
    A broker that cannot take the message leaves the event as it was (the 503 handler)."""
    with console().store.session() as session:
        row = replay.one_event(session, event_id)
        if row is None:
            return None
        return replay.replay([row], console().tasks.publish_event)[0]


def _erase_view(kind: str) -> None:
    def erase(target_id: str) -> Response:
        """Erase it wherever this service holds it; its tombstone stays (docs/privacy.md)."""
        actor = console().tokens.admin(request)
        if actor is None:
            return _forbidden("erasing needs a token from ADMIN_API_TOKENS")
        return jsonify(actions.erase(console(), kind, target_id, actor))

    bp.add_url_rule(f"/{kind}s/<target_id>", f"erase_{kind}", erase, methods=["DELETE"])


for _kind in ("conversation", *queries.resource_models()):
    _erase_view(_kind)


@bp.get("/destinations")
def destinations() -> Response:
    """Each destination's state, as ``tavus-callbacks destinations --json`` prints it."""
    with console().store.session() as session:
        rows = reads.destinations(session, console().settings)
    return jsonify({"data": rows, "next_cursor": None})


@bp.post(f"/deliveries/<{ROW_ID}:delivery_id>/redeliver")
def redeliver(delivery_id: int) -> Response:
    """Another round for one delivery (as ``tavus-callbacks redeliver``)."""
    with console().store.session() as session:
        done = actions.redeliver(session, console().settings, delivery_id, console().tasks.send)
    _audit("redeliver", f"delivery:{delivery_id}", "done" if done else "nothing")
    if not done:
        abort(404, description=f"no delivery {delivery_id}")
    response = jsonify({"delivery_id": delivery_id, "status": "pending"})
    response.status_code = 202
    return response


def _audit(action: str, target: str, outcome: str) -> None:
    """An API write, in the audit trail under the token's name."""
    actor = console().tokens.holder(request) or "api:?"
    audit.record(console().store, actor, action, target, outcome)


@bp.get("/audit")
def audit_trail() -> Response:
    """The audit trail, newest first (admin tokens only): ``since`` (ISO 8601), ``limit``."""
    if console().tokens.admin(request) is None:
        return _forbidden("reading the audit trail needs a token from ADMIN_API_TOKENS")
    since, limit = _audit_args(request.args)
    with console().store.session() as session:
        return jsonify({"data": audit.entries(session, since, limit)})


def _audit_args(args: Any) -> tuple[Any, int]:
    try:
        since = datetime.fromisoformat(args["since"]) if args.get("since") else None
        limit = int(args.get("limit", 100))
    except ValueError as exc:
        raise BadArgs({"since": ["ISO 8601 time"], "limit": ["1 to 1000"]}) from exc
    if not 1 <= limit <= 1000:
        raise BadArgs({"limit": ["1 to 1000"]})
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since, limit


def _forbidden(message: str) -> Response:
    response = jsonify({"error": "forbidden", "message": message})
    response.status_code = 403
    return response


@bp.get("/openapi.json")
def openapi_document() -> Response:
    document = current_app.extensions.get("console_openapi")
    if document is None:
        document = current_app.extensions["console_openapi"] = openapi.build_spec()
    return jsonify(document)
