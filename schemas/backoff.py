"""The one backoff: the retry policy's (``workers.retry``), the spool drainer's while Redis is
down (``receiver.spool``), so that every wait in the project doubles and spreads the same way."""

from __future__ import annotations

import random


def backoff(attempt: int, cap: float, base: float = 1.0) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, ...): ``base`` doubling per
    attempt up to ``cap``, with jitter over its upper half so that a crowd spreads out."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 32))
    return random.uniform(ceiling / 2, ceiling)
