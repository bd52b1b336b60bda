"""Which handler runs for which event, and what a handler is given.

A handler is registered with ``@handles(...)`` under a conversation ``event_type`` or, for the
shapes that have none, under their kind (``"guardrail"``, ``"video"``...), in a module the kind
names (``Kind.handlers``). Adding an event is adding a module with one decorated function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.callbacks import KIND_TABLE
from schemas.extensions import import_modules
from workers.store.records import Records, Row


@dataclass
class HandlerContext:
    records: Records  # the rows this event's transaction reads, locks and writes
    event: Row  # the stored event, read-only to a handler
    raw: dict[str, Any]  # the body as JSON, exactly as posted
    data: dict[str, Any]  # the body as its schema loaded it: dates parsed, variants folded
    follow_ups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def properties(self) -> dict[str, Any]:
        """The loaded ``properties``; empty when the tolerant reader had to leave them out."""
        properties = self.data.get("properties")
        return properties if isinstance(properties, dict) else {}

    def then(self, task_name: str, *args: Any) -> None:
        """Send this task once the event's transaction has committed (never before)."""
        self.follow_ups.append({"name": task_name, "args": list(args)})


Handler = Callable[[HandlerContext], None]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            if name in HANDLERS:
                raise RuntimeError(f"{name} already handled by {HANDLERS[name].__qualname__}")
            HANDLERS[name] = handler
        return handler

    return register


def handler_for(kind: str | None, event_type: str | None) -> Handler | None:
    if kind == "conversation":  # the one kind whose handlers go by event_type
        return HANDLERS.get(event_type) if event_type else None
    declared = KIND_TABLE.get(kind or "")
    if declared is None:
        return None
    if declared.handlers:
        importlib.import_module(declared.handlers)  # once; then a lookup in sys.modules
    return HANDLERS.get(declared.name)


def import_kind_handlers() -> None:
    """Import every kind's handler module (a worker's start): a broken one stops it there."""
    for kind in KIND_TABLE.values():
        if kind.handlers:
            import_modules([kind.handlers], f"the {kind.name} kind's handlers")
