"""The idempotency key of each kind: what makes a repeat a repeat, from what its shape offers.

Each function takes the body as its schema loaded it (the tolerant reader may have left fields
out) and the exact bytes; a key that cannot be made from the fields falls back to the bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any


def content_key(raw: bytes) -> str:
    """Bodies with no identity of their own are the same event when they are the same bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def conversation_key(data: dict[str, Any], raw: bytes) -> str:
    # Documented identity: (conversation_id, event_type, timestamp).
    stamp = data["timestamp"].isoformat() if data.get("timestamp") else content_key(raw)
    return f"conversation:{data['conversation_id']}:{data['event_type']}:{stamp}"


def objective_key(data: dict[str, Any], raw: bytes) -> str:
    # An objective completes once per conversation.
    return f"objective:{data['conversation_id']}:{data['objective_name']}"


def guardrail_key(data: dict[str, Any], raw: bytes) -> str:
    return f"guardrail:{content_key(raw)}"  # a repeat only within its window (see classify)


def replica_key(data: dict[str, Any], raw: bytes) -> str:
    # Training ends once, ready or error; the message tells errors apart.
    message = _digest(data.get("error_message"))
    return f"replica:{data['replica_id']}:{data.get('status')}:{message}"


def video_key(data: dict[str, Any], raw: bytes) -> str:
    # Each status update carries its own updated_at; without it, its progress.
    stamp = data.get("updated_at") or data.get("generation_progress")
    return f"video:{data['video_id']}:{data.get('status')}:{_digest(stamp)}"


def document_key(data: dict[str, Any], raw: bytes) -> str:
    # One update per status and progress figure, or per updated_at where the document has one.
    progress = data.get("progress")
    stamp = _digest(progress) if _is_scalar(progress) else content_key(raw)
    if data.get("updated_at"):
        stamp = f"{stamp}:{_digest(data['updated_at'])}"
    return f"document:{data['document_id']}:{data.get('status')}:{stamp}"


def tool_key(data: dict[str, Any], raw: bytes) -> str:
    # Tavus documents no retry of a tool delivery: the same bytes are the same delivery, and a
    # tool_call_id, where the body has one, names it.
    call = data.get("tool_call_id")
    return f"tool:{call}" if call else f"tool:{content_key(raw)}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _digest(value: Any) -> str:
    text = "" if value is None else str(value)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
