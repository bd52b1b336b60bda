"""Callbacks that are not conversation events: each resource posts its own shape."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, pre_load

from .base import TavusDateTime, TavusSchema, optional_text, required_id, required_text


class GuardrailProperties(TavusSchema):
    guardrail = required_text()


class GuardrailCallback(TavusSchema):
    """``{"conversation_id", "properties": {"guardrail": name}}``; no event_type, no timestamp."""

    conversation_id = required_id()
    properties = fields.Nested(GuardrailProperties, required=True)
    timestamp = TavusDateTime(load_default=None, allow_none=True)

    @pre_load
    def _fold_flat_name(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "properties" not in data:
            name = data.get("guardrail", data.get("guardrail_name"))
            if name is not None:
                return {**data, "properties": {"guardrail": name}}
        return data


class ObjectiveCallback(TavusSchema):
    """Loads both documented forms into the flat one.

    The docs show ``{"conversation_id", "objective_name", "output_variables"}``; code that saw
    real payloads reports the same fields nested under ``properties`` with an ``event_type``.
    """

    conversation_id = required_id()
    objective_name = required_id()
    output_variables = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    event_type = optional_text()
    message_type = optional_text()
    timestamp = TavusDateTime(load_default=None, allow_none=True)

    @pre_load
    def _fold_nested_form(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("properties"), dict):
            nested = data["properties"]
            folded = {k: v for k, v in data.items() if k != "properties"}
            for key in ("objective_name", "output_variables"):
                if key in nested and key not in folded:
                    folded[key] = nested[key]
            return folded
        return data


class ReplicaCallback(TavusSchema):
    """Replica training: ``{"replica_id", "status": "ready" | "error", "error_message"?}``."""

    replica_id = required_id()
    status = required_text()
    error_message = optional_text()


class VideoCallback(TavusSchema):
    """Video generation: the whole video object, dates as ``"2024-08-28 15:27:40.824457"``."""

    video_id = required_id()
    status = required_text()
    video_name = optional_text()
    status_details = optional_text()
    generation_progress = optional_text()
    download_url = optional_text()
    hosted_url = optional_text()
    stream_url = optional_text()
    replica_id = optional_text()
    data = fields.Dict(load_default=None, allow_none=True)
    created_at = TavusDateTime(load_default=None, allow_none=True)
    updated_at = TavusDateTime(load_default=None, allow_none=True)


class DocumentCallback(TavusSchema):
    """Knowledge-base document processing: the document object as the API reference shows it
    (``document_id``, ``document_name``, ``document_url``, ``status``, ``progress``, ``tags``,
    ``created_at`` / ``updated_at`` as ISO strings), each update a status."""

    document_id = required_id()
    status = required_text()
    document_name = optional_text()
    document_url = optional_text()
    callback_url = optional_text()
    progress = fields.Raw(load_default=None, allow_none=True)
    error_message = optional_text()
    tags = fields.List(fields.String(), load_default=None, allow_none=True)
    created_at = TavusDateTime(load_default=None, allow_none=True)
    updated_at = TavusDateTime(load_default=None, allow_none=True)


def is_objective(body: dict[str, Any]) -> bool:
    properties = body.get("properties")
    nested = isinstance(properties, dict) and "objective_name" in properties
    # Never str() a payload value: a list nested a thousand deep overflows the stack.
    event_type = body.get("event_type")
    named = isinstance(event_type, str) and "objective" in event_type
    return "objective_name" in body or nested or named


def is_guardrail(body: dict[str, Any]) -> bool:
    properties = body.get("properties")
    nested = isinstance(properties, dict) and "guardrail" in properties
    return "conversation_id" in body and (nested or "guardrail" in body)
