"""Matching a presented secret (a callback token, an API token, the metrics token)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def any_matches(presented: str, allowed: Iterable[bytes]) -> bool:
    """Compare against every allowed value, in constant time: timing tells nothing about which
    one nearly matched or how much of it."""
    candidate = presented.encode("utf-8", "surrogateescape")
    matched = False
    for value in allowed:
        matched |= hmac.compare_digest(candidate, value)
    return matched
