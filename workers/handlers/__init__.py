"""Event handlers, one module per event kind or conversation event type.

The conversation event types' modules are imported here (importing the package registers them);
every other kind names its handler module in its ``Kind`` (``schemas.callbacks``), imported on
its first event, and by ``import_kind_handlers`` when a worker starts.
"""

from . import (  # noqa: F401  (imported to register their handlers)
    joined,
    perception,
    post_call,
    recording,
    shutdown,
    transcript,
)
from .registry import HandlerContext, handler_for, import_kind_handlers

__all__ = ["HandlerContext", "handler_for", "import_kind_handlers"]
