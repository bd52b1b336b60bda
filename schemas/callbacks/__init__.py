"""Every callback kind in one table: its schemas, its identity and its idempotency key.

Adding a kind is one schema module and one ``Kind`` row here: the classifier, the receiver's
check, the worker's load and the key all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from . import keys
from .conversation import ConversationEvent, IntakeConversationEvent
from .standalone import (
    DocumentCallback,
    GuardrailCallback,
    ObjectiveCallback,
    ReplicaCallback,
    VideoCallback,
)
from .tool import TOOL, ToolDelivery

KeyFunction = Callable[[dict[str, Any], bytes], str]


@dataclass(frozen=True)
class Kind:
    name: str
    schema: Schema  # the worker's load: every field
    # The fields without which a body is no callback of this kind: a body whose identity does
    # not load is quarantined (422); any other deviation is a warning.
    identity: tuple[str, ...]
    key: KeyFunction = lambda data, raw: keys.content_key(raw)
    intake_schema: Schema | None = None  # the receiver's, when it checks less (None: schema)

    @property
    def intake(self) -> Schema:
        return self.intake_schema or self.schema


KIND_TABLE: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "conversation",
            ConversationEvent(),
            ("conversation_id", "event_type"),
            keys.conversation_key,
            IntakeConversationEvent(),
        ),
        Kind("guardrail", GuardrailCallback(), ("conversation_id",), keys.guardrail_key),
        Kind(
            "objective",
            ObjectiveCallback(),
            ("conversation_id", "objective_name"),
            keys.objective_key,
        ),
        Kind("replica", ReplicaCallback(), ("replica_id",), keys.replica_key),
        Kind("video", VideoCallback(), ("video_id",), keys.video_key),
        Kind("document", DocumentCallback(), ("document_id",), keys.document_key),
        Kind(TOOL, ToolDelivery(), ("name",), keys.tool_key),
    )
}
SCHEMAS_BY_KIND: dict[str, Schema] = {name: kind.schema for name, kind in KIND_TABLE.items()}
KINDS = tuple(KIND_TABLE)
