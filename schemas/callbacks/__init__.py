"""One marshmallow schema per callback shape, by kind."""

from __future__ import annotations

from marshmallow import Schema

from .conversation import ConversationEvent, IntakeConversationEvent
from .standalone import (
    DocumentCallback,
    GuardrailCallback,
    ObjectiveCallback,
    ReplicaCallback,
    VideoCallback,
)

SCHEMAS_BY_KIND: dict[str, Schema] = {
    "conversation": ConversationEvent(),
    "guardrail": GuardrailCallback(),
    "objective": ObjectiveCallback(),
    "replica": ReplicaCallback(),
    "video": VideoCallback(),
    "document": DocumentCallback(),
}
KINDS = tuple(SCHEMAS_BY_KIND)
# The receiver's: the same, but a transcript's entries are left to the worker (see TranscriptShape).
INTAKE_SCHEMAS_BY_KIND: dict[str, Schema] = {
    **SCHEMAS_BY_KIND,
    "conversation": IntakeConversationEvent(),
}
