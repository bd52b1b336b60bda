"""Event handlers, one module per event kind; importing this package registers them all."""

from . import (  # noqa: F401  (imported to register their handlers)
    document,
    guardrail,
    joined,
    objective,
    perception,
    post_call,
    recording,
    replica,
    shutdown,
    tool,
    transcript,
    video,
)
from .registry import HandlerContext, handler_for

__all__ = ["HandlerContext", "handler_for"]
