"""The event store: every event once, and the records its handlers keep current."""

from .db import Store

__all__ = ["Store"]
