"""What the benchmark posts: whole conversations, as Tavus sends them, with realistic transcripts.

One template a line for ``post.lua``: the eight callbacks of one conversation (joined twice,
a guardrail, an objective, shutdown, the transcript, perception, the recording) from
``cli.simulate``, with the conversation id and the send time left as placeholders so that
every request carries a new idempotency key and the time it was due.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from cli.simulate import conversation_lifecycle

CONVERSATION_ID = "@CID@"
SENT_AT = "@SENT@"
SENT_FIELD = "bench_sent_at"  # an unknown field: Tavus's schemas keep it, the store keeps it
# A turn every 4 s: 100 turns is a call of about seven minutes, an ~18 KB transcript.
DEFAULT_TURNS = 100


def templates(turns: int = DEFAULT_TURNS) -> list[str]:
    """The conversation's callbacks as JSON lines, placeholders in place of id and send time."""
    lines = []
    for body in conversation_lifecycle(CONVERSATION_ID, turns=turns):
        text = orjson.dumps({**body, SENT_FIELD: SENT_AT}).decode()
        lines.append(text.replace(f'"{SENT_AT}"', SENT_AT))  # a number, not a string
    return lines


def write_templates(path: Path, turns: int = DEFAULT_TURNS) -> list[str]:
    lines = templates(turns)
    path.write_text("\n".join(lines) + "\n")
    return lines


def render(template: str, conversation_id: str, sent_at: float) -> bytes:
    """One body from a template, as post.lua fills it."""
    return (
        template.replace(CONVERSATION_ID, conversation_id)
        .replace(SENT_AT, f"{sent_at:.6f}")
        .encode()
    )


def sent_at(body: str | bytes) -> float | None:
    """When a stored body was due to be posted, if the benchmark posted it."""
    value: Any = orjson.loads(body).get(SENT_FIELD)
    return float(value) if isinstance(value, int | float) else None
