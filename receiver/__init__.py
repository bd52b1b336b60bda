"""The web process: authenticate, parse, classify, claim the key, enqueue, answer.

It imports ``schemas`` and nothing else of ours: no workers, no store, no cloud SDK.
"""

from .app import create_app

__all__ = ["create_app"]
