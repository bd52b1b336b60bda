"""Who may post: a secret token in the URL path or as the password of HTTP Basic auth.

Tavus signs nothing, so the callback URL itself carries the secret. Several tokens may be valid at
once, so one can be rotated in while the old one is still configured on live conversations.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.tokens import any_matches

from .errors import Unauthorized


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
