"""A toy callback kind, the intake half: a post-call survey, ``{"survey_id", "score",
"conversation_id"?}``, told apart by its ``survey_id``.

The recipe's module in schemas/callbacks/ (docs/architecture.md, "A callback kind"), and its one
line, ``register(...)``. Like the receiver, it imports only ``schemas``: its handler is the
module it names, imported by the workers alone.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from schemas.callbacks import Kind, register
from schemas.callbacks.base import TavusSchema, having, optional_text, required_id


class SurveyCallback(TavusSchema):
    survey_id = required_id()
    score = fields.Integer(load_default=None, allow_none=True)
    conversation_id = optional_text()


def survey_key(data: dict[str, Any], raw: bytes) -> str:
    return f"survey:{data['survey_id']}"  # one answer per survey


KIND = register(
    Kind(
        "survey",
        SurveyCallback(),
        ("survey_id",),
        survey_key,
        matches=having("survey_id"),
        handlers="tests.extensions.survey_handler",
    )
)
