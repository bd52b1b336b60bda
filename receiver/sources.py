"""Where a request comes from, and whether that network may post callbacks at all.

Behind proxies the peer address is the nearest proxy's, and ``X-Forwarded-For`` lists the
addresses each hop saw, the client's own claims first. Only the entries appended by proxies we
run can be believed: with ``TRUSTED_PROXIES = n`` the caller is the n-th entry from the right
(the one the outermost trusted proxy appended). Heroku's router appends exactly one. The leftmost
entry is whatever the client wrote, and trusting it would let anyone pass the allowlist.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from .errors import ForbiddenSource

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(remote_addr: str | None, forwarded_for: str | None, trusted: int) -> str | None:
    """The caller's address as the outermost trusted proxy saw it.

    With fewer entries than trusted proxies the request did not come through them all: the peer
    address is the only fact left (as werkzeug's ProxyFix does).
    """
    if trusted <= 0 or not forwarded_for:
        return remote_addr
    entries = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
    return entries[-trusted] if len(entries) >= trusted else remote_addr


def parse_address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class SourceAllowlist:
    """``ALLOWED_SOURCE_CIDRS``; empty allows everyone and costs nothing per request."""

    def __init__(self, cidrs: Iterable[str], trusted_proxies: int) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in cidrs
        )
        self.trusted_proxies = trusted_proxies

    def check(self, environ: dict[str, Any]) -> None:
        """Raise ForbiddenSource unless the caller's address is in an allowed network."""
        if not self.networks:
            return
        claimed = client_address(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), self.trusted_proxies
        )
        address = parse_address(claimed)
        if address is not None:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if any(address in network for network in self.networks):
                return
        log.warning("refused a callback from %r: not in ALLOWED_SOURCE_CIDRS", (claimed or "")[:64])
        raise ForbiddenSource("this address may not post callbacks")
