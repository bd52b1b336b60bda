"""Who may post: a secret token in the URL path or as the password of HTTP Basic auth, or, for
Tavus's signed tool deliveries, a valid ``X-Tavus-Signature`` instead.

Tavus signs no callback, so the callback URL itself carries the secret. Several tokens may be
valid at once, so one can be rotated in while the old one is still configured on live
conversations.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from schemas.tokens import any_matches

from .errors import BadSignature, Unauthorized


class TokenChecker:
    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)

    def authenticate(self, presented: str | None) -> None:
        """Raise Unauthorized unless ``presented`` is one of the tokens.

        Every token is compared, in constant time, so timing tells nothing about which one
        nearly matched or how much of it.
        """
        if not presented:
            raise Unauthorized("missing callback token")
        if not any_matches(presented, self._tokens):
            raise Unauthorized("wrong callback token")


class SignatureChecker:
    """Tavus's tool deliveries (``auth.type: "hmac"``): ``X-Tavus-Signature`` is the hex
    HMAC-SHA256 of the exact body bytes under the tool's secret.

    Tavus documents the header and ``<hex>``; that the MAC is SHA-256 over the raw body alone
    (no timestamp, no prefix) is our reading of it, kept here in one place. Several secrets may
    verify at once, for rotation.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._keys = tuple(secret.encode() for secret in secrets)

    def verify(self, raw: bytes, presented: str) -> None:
        """Raise BadSignature unless ``presented`` is the body's MAC under one of the secrets.

        The MAC under every secret is compared, in constant time; the message names no secret.
        """
        expected = (hmac.new(key, raw, hashlib.sha256).hexdigest().encode() for key in self._keys)
        if not any_matches(presented.strip().lower(), expected):
            raise BadSignature("X-Tavus-Signature does not verify with any TAVUS_SIGNING_SECRETS")
