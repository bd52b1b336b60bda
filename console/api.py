"""``/api/v1``: the store as JSON, for apps and scripts. Bearer tokens from ``API_TOKENS``.

A list answers ``{"data": [...], "next_cursor": "..."}`` (``null`` on the last page); a single
resource answers the record itself (a conversation is what ``tavus-callbacks conversation
--json`` prints). Errors are ``{"error": ..., "message": ...}`` with 401, 404, 422 or 503.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request

from workers import queries, replay

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


def _found(record: dict[str, Any] | None, what: str) -> Response:
    if record is None:
        abort(404, description=f"no {what}")
    return jsonify(record)


@bp.get("/events")
def events() -> Response:
    return _page(reads.events_page, EVENT_ARGS)


@bp.get("/events/<event_id>")
def event(event_id: str) -> Response:
    with console().store.session() as session:
        return _found(reads.event_record(session, event_id), f"event {event_id}")


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str) -> Response:
    done = replay_one(event_id)
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


@bp.get("/conversations")
def conversations() -> Response:
    return _page(reads.conversations_page, CONVERSATION_ARGS)


@bp.get("/conversations/<conversation_id>")
def conversation(conversation_id: str) -> Response:
    with console().store.session() as session:
        record = queries.conversation_view(session, conversation_id)
    return _found(record, f"conversation {conversation_id}")


def _resource_view(kind: str) -> None:
    def show(resource_id: str) -> Response:
        with console().store.session() as session:
            record = queries.resource_record(session, kind, resource_id)
        return _found(record, f"{kind} {resource_id}")

    bp.add_url_rule(f"/{kind}s/<resource_id>", f"{kind}", show, methods=["GET"])


for _kind in queries.resource_models():  # replicas/<id>, videos/<id>, documents/<id>
    _resource_view(_kind)


@bp.get("/alerts")
def alerts() -> Response:
    return _page(reads.alerts_page, ALERT_ARGS)


@bp.get("/deliveries")
def deliveries() -> Response:
    return _page(reads.deliveries_page, DELIVERY_ARGS)


@bp.post(f"/deliveries/<{ROW_ID}:delivery_id>/redeliver")
def redeliver(delivery_id: int) -> Response:
    """Another round for one delivery (as ``tavus-callbacks redeliver``)."""
    with console().store.session() as session:
        done = actions.redeliver(session, console().settings, delivery_id, console().tasks.send)
    if not done:
        abort(404, description=f"no delivery {delivery_id}")
    response = jsonify({"delivery_id": delivery_id, "status": "pending"})
    response.status_code = 202
    return response


@bp.get("/openapi.json")
def openapi_document() -> Response:
    document = current_app.extensions.get("console_openapi")
    if document is None:
        document = current_app.extensions["console_openapi"] = openapi.build_spec()
    return jsonify(document)
