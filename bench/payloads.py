"""What the benchmark posts: whole conversations, as Tavus sends them, with realistic transcripts.

One template a line for ``post.lua``: the eight callbacks of one conversation (joined twice,
a guardrail, an objective, shutdown, the transcript, perception, the recording) from
``cli.simulate``, with the conversation id and the send time left as placeholders so that
every request carries a new idempotency key and the time it was due.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cli.simulate import conversation_event, conversation_lifecycle, transcript

CONVERSATION_ID = "@CID@"
SENT_AT = "@SENT@"
SENT_FIELD = "bench_sent_at"  # an unknown field: Tavus's schemas keep it, the store keeps it
# A turn every 4 s: 100 turns is a call of about seven minutes, an ~18 KB transcript.
DEFAULT_TURNS = 100


# The loads: whole conversations (the main one), and single-kind loads beside it, each with
# the bodies one kind of callback really has: transcripts only, from a short call's ~1 KB to a
# long one's ~20 KB, and small system events only (joined, shutdown).
CONVERSATION_MIX = "conversation"
MIXES = (CONVERSATION_MIX, "transcripts", "system")
TRANSCRIPT_TURNS = (5, 12, 25, 40, 55, 70, 85, 110)


def templates(turns: int = DEFAULT_TURNS, mix: str = CONVERSATION_MIX) -> list[str]:
    """The mix's callbacks as JSON lines, placeholders in place of id and send time."""
    return [_template(body) for body in _bodies(mix, turns)]


def _template(body: dict[str, Any]) -> str:
    text = orjson.dumps({**body, SENT_FIELD: SENT_AT}).decode()
    return text.replace(f'"{SENT_AT}"', SENT_AT)  # a number, not a string


def _bodies(mix: str, turns: int) -> list[dict[str, Any]]:
    """One round of the mix: every body of a round differs in its key (post.lua gives each
    round a conversation id of its own)."""
    if mix == CONVERSATION_MIX:
        return conversation_lifecycle(CONVERSATION_ID, turns=turns)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    if mix == "transcripts":
        return [
            conversation_event(
                CONVERSATION_ID,
                "application.transcription_ready",
                start + timedelta(seconds=n),  # one key per transcript of the round
                {"replica_id": "r79e1c033f", "transcript": transcript(count, start)},
            )
            for n, count in enumerate(TRANSCRIPT_TURNS)
        ]
    if mix == "system":
        return [
            body
            for body in conversation_lifecycle(CONVERSATION_ID, turns=1, start=start)
            if body.get("message_type") == "system"
        ]
    raise ValueError(f"unknown mix {mix!r}: one of {', '.join(MIXES)}")


def write_templates(
    path: Path, turns: int = DEFAULT_TURNS, mix: str = CONVERSATION_MIX
) -> list[str]:
    lines = templates(turns, mix)
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
