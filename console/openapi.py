"""``GET /api/v1/openapi.json``: the read API described for client generators and validators.

Built as the intake's is (``receiver/openapi.py``): apispec with its marshmallow plugin, the
query parameters taken from the very schemas that parse them (``console/params.py``).
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from workers import queries

from .params import AlertArgs, ConversationArgs, DeliveryArgs, EventArgs

OPENAPI_VERSION = "3.0.3"

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": True},
    },
}
_RECORD = {"type": "object", "additionalProperties": True}
_LIST = {
    "type": "object",
    "required": ["data", "next_cursor"],
    "properties": {
        "data": {"type": "array", "items": _RECORD},
        "next_cursor": {"type": "string", "nullable": True},
    },
}
_ERRORS = {
    "401": {"description": "Missing or wrong bearer token"},
    "503": {"description": "The store or Redis did not answer; retry"},
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _list(summary: str, args: type) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [{"in": "query", "schema": args}],
            "responses": {
                "200": _json("One page, newest first", _LIST),
                "422": _json("A parameter did not parse; `errors` says which", _ERROR),
                **_ERRORS,
            },
        }
    }


def _one(summary: str, name: str, erasable: bool = True) -> dict[str, Any]:
    """Reading one record (``GET``) and, where it can be erased, erasing it (``DELETE``, admin
    tokens only). An event is erased with its conversation or resource, never alone."""
    parameter = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    what = summary.removeprefix("One ").split(",")[0]
    operations = {
        "get": {
            "summary": summary,
            "parameters": [parameter],
            "responses": {
                "200": _json("The record", _RECORD),
                "404": _json("Not known", _ERROR),
                **_ERRORS,
            },
        },
        "delete": {
            "summary": f"Erase the {what} wherever this service holds it; a tombstone stays "
            "(a token from ADMIN_API_TOKENS)",
            "parameters": [parameter],
            "responses": {
                "200": _json(
                    "Erased: the rows, queued messages and spooled files removed", _RECORD
                ),
                "403": _json("The token may read, not erase", _ERROR),
                **_ERRORS,
            },
        },
    }
    if not erasable:
        del operations["delete"]
    return operations


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="tavus-callbacks read API",
        version="1",
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": "What the pipeline stored: events, conversations, alerts."},
        servers=[{"url": "/api/v1"}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.options["security"] = [{"bearer": []}]
    spec.path("/events", operations=_list("Events, filtered", EventArgs))
    spec.path(
        "/events/{event_id}",
        operations=_one("One event: raw body, attempts", "event_id", erasable=False),
    )
    replay = {
        "post": {
            "summary": "Process the event again (after the cause of its failure is fixed)",
            "parameters": [
                {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "202": _json("Reset and queued", _RECORD),
                "404": _json("Not known", _ERROR),
                **_ERRORS,
            },
        }
    }
    spec.path("/events/{event_id}/replay", operations=replay)
    conversations = _list(
        "Conversations; with `q`, those whose transcript holds the words, best first",
        ConversationArgs,
    )
    conversations["get"]["responses"]["409"] = _json(
        "`q` while ENCRYPTION_KEYS is set: transcript search is off (`search_off`)", _ERROR
    )
    spec.path("/conversations", operations=conversations)
    spec.path(
        "/conversations/{conversation_id}",
        operations=_one("One conversation, as `conversation --json`", "conversation_id"),
    )
    for kind in queries.resource_models():
        spec.path(f"/{kind}s/{{{kind}_id}}", operations=_one(f"One {kind}", f"{kind}_id"))
    spec.path("/alerts", operations=_list("Alerts, with each channel's delivery", AlertArgs))
    spec.path(
        "/deliveries",
        operations=_list("Deliveries to your destinations, with their type", DeliveryArgs),
    )
    redeliver = {
        "post": {
            "summary": "Send one delivery again (a new round of attempts)",
            "parameters": [
                {"name": "delivery_id", "in": "path", "required": True,
                 "schema": {"type": "integer"}}
            ],
            "responses": {
                "202": _json("Reset and queued", _RECORD),
                "404": _json("Not known", _ERROR),
                **_ERRORS,
            },
        }
    }  # fmt: skip
    spec.path("/deliveries/{delivery_id}/redeliver", operations=redeliver)
    destinations = {
        "get": {
            "summary": "Each destination: type, state (active or paused, why, since when), last "
            "success, failures in a row, pending deliveries (as `tavus-callbacks destinations`)",
            "responses": {"200": _json("Every destination, by name", _LIST), **_ERRORS},
        }
    }
    spec.path("/destinations", operations=destinations)
    audit = {
        "get": {
            "summary": "The audit trail, newest first (a token from ADMIN_API_TOKENS)",
            "parameters": [
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 1000}},
            ],
            "responses": {
                "200": _json("Entries: time, actor, action, target, outcome, detail", _LIST),
                "403": _json("The token may read, not see the audit trail", _ERROR),
                "422": _json("A parameter did not parse", _ERROR),
                **_ERRORS,
            },
        }
    }
    spec.path("/audit", operations=audit)
    document = spec.to_dict()
    document["security"] = [{"bearer": []}]
    return document
