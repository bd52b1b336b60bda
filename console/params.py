"""The query parameters the API and the pages accept, as marshmallow schemas.

One schema per list: the API answers 422 with the schema's messages (keyed by parameter), the
pages show the same messages, and the OpenAPI document is generated from these classes.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as f

from schemas.callbacks import KIND_TABLE
from workers.store import search
from workers.store.models import EventStatus

EVENT_STATUSES = ("received", *sorted(EventStatus.FINAL))
CONVERSATION_STATUSES = ("pending", "active", "ended", "failed")
SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# A row id in a path, as Werkzeug's converter: at most a signed 64-bit integer, the widest any
# store holds. A larger one is a 404, not an overflow in the database driver (a 500).
ROW_ID = f"int(max={2**63 - 1})"


class PageArgs(Schema):
    """``limit`` and ``cursor``: every list answers ``{"data": [...], "next_cursor": ...}``."""

    class Meta:
        unknown = EXCLUDE  # a page link may carry parameters of another view

    limit = f.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Items per page, 1 to {MAX_LIMIT}."},
    )
    cursor = f.String(
        load_default=None,
        metadata={"description": "The `next_cursor` of the previous page; opaque."},
    )


def _when(description: str) -> f.AwareDateTime:
    return f.AwareDateTime(
        load_default=None, default_timezone=UTC, metadata={"description": description}
    )


class EventArgs(PageArgs):
    # A live view of the kinds: those of TAVUS_EXTENSIONS are registered after this import.
    kind = f.String(load_default=None, validate=validate.OneOf(KIND_TABLE.keys()))
    type = f.String(load_default=None, metadata={"description": "An event_type."})
    status = f.String(load_default=None, validate=validate.OneOf(EVENT_STATUSES))
    conversation = f.String(load_default=None, metadata={"description": "A conversation_id."})
    resource = f.String(
        load_default=None,
        metadata={"description": "A replica, video or document id the event's body names."},
    )
    since = _when("Received at or after this ISO 8601 time (UTC unless it says).")
    until = _when("Received before this ISO 8601 time.")

    @validates_schema
    def _window(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ValidationError("must be later than since", "until")


class ConversationArgs(PageArgs):
    status = f.String(load_default=None, validate=validate.OneOf(CONVERSATION_STATUSES))
    since = _when("First seen at or after this ISO 8601 time.")
    q = f.String(
        load_default=None,
        validate=[
            validate.Length(max=search.MAX_QUERY_LENGTH),
            # No engine takes a NUL, and nothing said in a call holds a control character.
            validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="must not hold control characters"),
        ],
        metadata={
            "description": "Words said in the conversation (all in one line of its transcript), "
            'or a "quoted phrase": the best matches first, each with its `match` (line, role, '
            "snippet, highlights)."
        },
    )


class AlertArgs(PageArgs):
    severity = f.String(load_default=None, validate=validate.OneOf(SEVERITIES))
    conversation = f.String(load_default=None, metadata={"description": "A conversation_id."})


DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed")


class AlertDeliveryArgs(PageArgs):
    status = f.String(load_default=None, validate=validate.OneOf(DELIVERY_STATUSES))


class DeliveryArgs(AlertDeliveryArgs):
    destination = f.String(
        load_default=None,
        metadata={"description": "A destination: <NAME> of FORWARD_<NAME>_URL, or hook:..."},
    )
    event = f.String(load_default=None, metadata={"description": "Only this event's."})


class BadArgs(ValueError):
    """Parameters that do not parse: ``messages`` is keyed by parameter name."""

    def __init__(self, messages: dict[str, Any]) -> None:
        super().__init__("invalid parameters")
        self.messages = messages


def parse(schema: Schema, args: Any) -> dict[str, Any]:
    """Load request arguments, blank values treated as absent (an empty filter box)."""
    present = {key: value for key, value in args.items() if value != ""}
    try:
        return schema.load(present)
    except ValidationError as exc:
        raise BadArgs(exc.messages) from exc


EVENT_ARGS = EventArgs()
CONVERSATION_ARGS = ConversationArgs()
ALERT_ARGS = AlertArgs()
DELIVERY_ARGS = DeliveryArgs()
