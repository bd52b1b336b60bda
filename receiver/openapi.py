"""``GET /openapi.json``: the intake described from the marshmallow schemas themselves.

The callback schemas in ``schemas/callbacks`` are the single source: apispec's marshmallow plugin
turns each into a component, and a conversation event gets one variant per known
``event_type`` with that type's ``properties`` schema. The response table is the README's.
Built once per process, on first request.
"""

from __future__ import annotations

from typing import Any

import orjson
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app

from schemas.callbacks import SCHEMAS_BY_KIND
from schemas.callbacks.base import TavusDateTime
from schemas.callbacks.conversation import PROPERTIES_BY_EVENT_TYPE

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_ACCEPTED = {
    "type": "object",
    "required": ["status", "event_id"],
    "properties": {
        "status": {"type": "string", "enum": ["accepted", "spooled"]},
        "event_id": {"type": "string", "format": "uuid"},
    },
}
_DUPLICATE = {
    "type": "object",
    "required": ["status", "event_id"],
    "properties": {
        "status": {"type": "string", "enum": ["duplicate"]},
        "event_id": {"type": "string", "format": "uuid"},
    },
}
_QUARANTINED = {
    "type": "object",
    "required": ["status", "event_id", "error", "errors"],
    "properties": {
        "status": {"type": "string", "enum": ["quarantined"]},
        "event_id": {"type": "string", "format": "uuid"},
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": True},
    },
}

# (status, description, schema): the README's response table.
RESPONSES: tuple[tuple[int, str, dict[str, Any]], ...] = (
    (202, "Queued in Redis (`accepted`) or, while Redis is down, in the local spool (`spooled`)",
     _ACCEPTED),
    (200, "The same event was accepted before; `event_id` is the first one's", _DUPLICATE),
    (400, "The body is not a JSON object, or `?kind=` is unknown", _ERROR),
    (401, "Missing or wrong token, or an `X-Tavus-Signature` that does not verify "
          "(`bad_signature`); nothing stored", _ERROR),
    (403, "The caller's address is outside `ALLOWED_SOURCE_CIDRS`; nothing stored", _ERROR),
    (408, "The body did not arrive within `BODY_TIMEOUT_SECONDS`", _ERROR),
    (413, "The body is larger than `MAX_BODY_BYTES`", _ERROR),
    (422, "A JSON object that is no Tavus callback: kept, as quarantined", _QUARANTINED),
    (503, "Neither Redis nor the spool can take the event; retry", _ERROR),
)  # fmt: skip


SIGNATURE_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "X-Tavus-Signature",
    "description": "A signed tool delivery (auth.type hmac): the hex HMAC-SHA256 of the exact "
    "body under one of TAVUS_SIGNING_SECRETS; stored as kind `tool`, no token needed.",
}


def _date_field(converter: Any, field: Any, **kwargs: Any) -> dict[str, Any]:
    """Tavus sends dates as ISO 8601 strings or epoch numbers."""
    if isinstance(field, TavusDateTime):
        return {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
    return {}


def build_spec() -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="tavus-callbacks intake",
        version="1",
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": "Receives the callbacks Tavus POSTs to a callback_url."},
    )
    plugin.converter.add_attribute_function(_date_field)
    spec.components.security_scheme("basic", {"type": "http", "scheme": "basic"})
    spec.components.security_scheme("tavusSignature", SIGNATURE_SCHEME)
    for schema in dict.fromkeys(type(s) for s in PROPERTIES_BY_EVENT_TYPE.values()):
        spec.components.schema(schema.__name__, schema=schema)
    bodies = []
    for kind, schema in SCHEMAS_BY_KIND.items():
        name = type(schema).__name__
        spec.components.schema(name, schema=type(schema))
        if kind == "conversation":
            bodies += _conversation_variants(name)
        bodies.append({"$ref": f"#/components/schemas/{name}"})
    for status, description, schema in RESPONSES:
        spec.components.response(
            f"R{status}",
            {"description": description, "content": {"application/json": {"schema": schema}}},
        )
    responses = {str(status): f"R{status}" for status, _, _ in RESPONSES}
    body = {
        "required": True,
        "description": "One Tavus callback; the kind is read from its shape.",
        "content": {"application/json": {"schema": {"oneOf": bodies}}},
    }
    kind = {
        "name": "kind",
        "in": "query",
        "required": False,
        "description": "Force the callback kind instead of guessing it from the body.",
        "schema": {"type": "string", "enum": list(SCHEMAS_BY_KIND)},
    }
    token = {
        "name": "token",
        "in": "path",
        "required": True,
        "description": "The secret callback token (CALLBACK_TOKENS).",
        "schema": {"type": "string", "minLength": 16},
    }
    post = {"summary": "Receive one callback", "requestBody": body, "responses": responses}
    spec.path("/callbacks/{token}", operations={"post": {**post, "parameters": [token, kind]}})
    security = [{"basic": []}, {"tavusSignature": []}]
    spec.path(
        "/callbacks", operations={"post": {**post, "parameters": [kind], "security": security}}
    )
    plain = {"content": {"application/json": {"schema": {"type": "object"}}}}
    alive = {"200": {**plain, "description": "the process is up"}}
    spec.path("/healthz", operations={"get": {"summary": "Liveness", "responses": alive}})
    spec.path(
        "/readyz",
        operations={
            "get": {
                "summary": "Readiness: Redis, the spool, Redis's eviction policy",
                "responses": {
                    "200": {**plain, "description": "events can be taken (maybe only spooled)"},
                    "503": {**plain, "description": "neither Redis nor the spool can take events"},
                },
            }
        },
    )
    return spec.to_dict()


def _conversation_variants(envelope: str) -> list[dict[str, Any]]:
    """One body schema per known event_type, so each gets its own ``properties`` schema."""
    return [
        {
            "allOf": [
                {"$ref": f"#/components/schemas/{envelope}"},
                {
                    "type": "object",
                    "required": ["properties"],
                    "properties": {
                        "event_type": {"type": "string", "enum": [event_type]},
                        "properties": {"$ref": f"#/components/schemas/{type(schema).__name__}"},
                    },
                },
            ]
        }
        for event_type, schema in PROPERTIES_BY_EVENT_TYPE.items()
    ]


@bp.get("/openapi.json")
def openapi() -> Response:
    document = current_app.extensions.get("openapi")
    if document is None:
        document = current_app.extensions["openapi"] = orjson.dumps(build_spec())
    return Response(document, mimetype="application/json")
