"""Tool deliveries: a Tavus tool with ``delivery.api`` and ``auth.type: "hmac"`` (a post-call
action, or an in-call tool delivered by API), posted to us signed.

Tavus calls the body "Tavus-shape" without printing it. Tools seen in use read ``name``,
``arguments`` (a JSON string, as in ``conversation.tool_call``) and ``tool_call_id`` at the top;
the ``conversation.tool_call`` event nests ``name`` and ``arguments`` under ``properties``. Both
load into the flat form, and ``arguments`` sent as a JSON string load as the object it holds.
"""

from __future__ import annotations

from typing import Any

import orjson
from marshmallow import fields, pre_load

from .base import TavusDateTime, TavusSchema, optional_text, required_text

TOOL = "tool"


class ToolArguments(fields.Field):
    """An object, or a JSON string holding one; any other string is kept as it came."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
        return value


class ToolDelivery(TavusSchema):
    name = required_text()
    arguments = ToolArguments(load_default=dict, allow_none=True)
    tool_call_id = optional_text()
    conversation_id = optional_text()
    event_type = optional_text()
    message_type = optional_text()
    timestamp = TavusDateTime(load_default=None, allow_none=True)

    @pre_load
    def _fold_nested_form(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        nested = data.get("properties")
        folded = {k: v for k, v in data.items() if k != "properties"}
        if isinstance(nested, dict):
            for key in ("name", "arguments", "tool_call_id", "conversation_id"):
                if key in nested and key not in folded:
                    folded[key] = nested[key]
        if "name" not in folded and "tool_name" in folded:
            folded["name"] = folded.pop("tool_name")
        return folded


def is_tool_delivery(body: dict[str, Any]) -> bool:
    """An unsigned body that reads as one (a signed body is one whatever its shape)."""
    event_type = body.get("event_type")
    named = isinstance(event_type, str) and event_type.endswith("tool_call")
    return "tool_call_id" in body or ("name" in body and "arguments" in body) or named
