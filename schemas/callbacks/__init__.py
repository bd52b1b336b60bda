"""Every callback kind in one table: its schemas, its identity, its idempotency key, the rule
that tells its bodies apart, and the module of its handler.

Adding a kind is one module declaring its ``Kind`` and one line: in ``KIND_TABLE`` here, or
``register(KIND)`` in a module of TAVUS_EXTENSIONS. The classifier, the receiver's check, the
worker's load and handler, the metrics, the console, the API and the CLI all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from . import keys
from .base import having
from .conversation import ConversationEvent, IntakeConversationEvent
from .standalone import (
    DocumentCallback,
    GuardrailCallback,
    ObjectiveCallback,
    ReplicaCallback,
    VideoCallback,
    is_guardrail,
    is_objective,
)
from .tool import TOOL, ToolDelivery, is_tool_delivery

KeyFunction = Callable[[dict[str, Any], bytes], str]
Rule = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Kind:
    name: str
    schema: Schema  # the worker's load: every field
    # The fields without which a body is no callback of this kind: a body whose identity does
    # not load is quarantined (422); any other deviation is a warning.
    identity: tuple[str, ...]
    key: KeyFunction = lambda data, raw: keys.content_key(raw)
    intake_schema: Schema | None = None  # the receiver's, when it checks less (None: schema)
    # Whether a body is of this kind, from its fields. Rules are tried in the table's order,
    # first match wins (None: the kind is only ever named, by ``?kind=`` or a signature).
    matches: Rule | None = None
    # The module of its ``@handles("<name>")`` handler, imported by the workers only: schemas/
    # and the receiver never import workers/, so the kind names it rather than importing it.
    handlers: str | None = None
    # Set when equal keys may be distinct events later on: the key then marks a repeat only
    # within this many seconds (see ``schemas.classify.Verdict.repeat_window``).
    repeat_window: int | None = None

    @property
    def intake(self) -> Schema:
        return self.intake_schema or self.schema


# Guardrail callbacks carry neither a timestamp nor an id, and one guardrail may trigger several
# times in a conversation. An identical body within this many seconds of the first is taken as
# the same delivery sent twice; later, the same trigger counts again.
GUARDRAIL_REPEAT_WINDOW_SECONDS = 10

# In the order their rules are tried: the order is part of the contract (an objective and a
# tool call also have an event_type and a conversation_id). A kind registered later is tried
# after these, so it never takes a body one of them would.
KIND_TABLE: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "objective",
            ObjectiveCallback(),
            ("conversation_id", "objective_name"),
            keys.objective_key,
            matches=is_objective,
            handlers="workers.handlers.objective",
        ),
        Kind(
            TOOL,
            ToolDelivery(),
            ("name",),
            keys.tool_key,
            matches=is_tool_delivery,
            handlers="workers.handlers.tool",
        ),
        Kind(
            "conversation",
            ConversationEvent(),
            ("conversation_id", "event_type"),
            keys.conversation_key,
            IntakeConversationEvent(),
            matches=having("event_type", "conversation_id"),
        ),  # its handlers go by event_type: workers/handlers/__init__.py imports them
        Kind(
            "guardrail",
            GuardrailCallback(),
            ("conversation_id",),
            keys.guardrail_key,
            matches=is_guardrail,
            handlers="workers.handlers.guardrail",
            repeat_window=GUARDRAIL_REPEAT_WINDOW_SECONDS,
        ),
        Kind(
            "video",
            VideoCallback(),
            ("video_id",),
            keys.video_key,
            matches=having("video_id"),
            handlers="workers.handlers.video",
        ),
        Kind(
            "document",
            DocumentCallback(),
            ("document_id",),
            keys.document_key,
            matches=having("document_id"),
            handlers="workers.handlers.document",
        ),
        Kind(
            "replica",
            ReplicaCallback(),
            ("replica_id",),
            keys.replica_key,
            matches=having("replica_id", "status"),
            handlers="workers.handlers.replica",
        ),
    )
}
# Both grow when a kind is registered: read them when needed, never copy them at import.
SCHEMAS_BY_KIND: dict[str, Schema] = {name: kind.schema for name, kind in KIND_TABLE.items()}


def kinds() -> tuple[str, ...]:
    """Every kind's name, built-in and registered, in the order their rules are tried."""
    return tuple(KIND_TABLE)


def register(kind: Kind) -> Kind:
    """Add a kind (from a TAVUS_EXTENSIONS module): tried after every kind before it."""
    known = KIND_TABLE.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"callback kind {kind.name!r} is already registered")
    KIND_TABLE[kind.name] = kind
    SCHEMAS_BY_KIND[kind.name] = kind.schema
    return kind
