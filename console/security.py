"""Who may read: bearer tokens for the API, a password and a signed session for the pages.

- API: ``Authorization: Bearer <token>``, any of ``API_TOKENS`` or ``ADMIN_API_TOKENS``,
  compared in constant time; only an admin token may erase.
- Pages: ``CONSOLE_PASSWORD``, then a session cookie (HttpOnly, SameSite=Lax, Secure when the
  request came over HTTPS, the proxy's X-Forwarded-Proto honoured as TRUSTED_PROXIES says).
- Every POST of the pages carries the session's CSRF token.
- Sign-in is throttled per client address in Redis, so every web process counts together.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

import redis
from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSessionInterface

from schemas.settings import Settings, named_token
from schemas.tokens import any_matches

SESSION_SALT = b"tavus-callbacks console session"
CSRF_FIELD = "csrf_token"
SIGNIN_LIMIT = 10  # failed sign-ins per address ...
SIGNIN_WINDOW_SECONDS = 15 * 60  # ... within this long, then 429 until the window ends
THROTTLE_PREFIX = "tavus:console:signin:"


class ApiTokens:
    """``API_TOKENS`` and ``ADMIN_API_TOKENS``, each entry ``name:token`` or a bare token (named
    by its position: ``token-1``, ``admin-1``...). The name is what the audit trail records."""

    def __init__(self, tokens: Iterable[str], admin_tokens: Iterable[str] = ()) -> None:
        self._admin = _named(admin_tokens, "admin")
        self._tokens = _named(tokens, "token") + self._admin

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def allows(self, req: Request) -> bool:
        return self.holder(req) is not None

    def holder(self, req: Request) -> str | None:
        """``api:<name>`` of the token the request carries, or None."""
        return _match(_bearer(req), self._tokens)

    def admin(self, req: Request) -> str | None:
        """``api:<name>`` of the ``ADMIN_API_TOKENS`` entry the request carries, or None: only
        those may erase and read the audit trail."""
        return _match(_bearer(req), self._admin)


def _named(entries: Iterable[str], prefix: str) -> tuple[tuple[str, bytes], ...]:
    named = []
    for position, entry in enumerate(entries, start=1):
        name, token = named_token(entry)
        named.append((name or f"{prefix}-{position}", token.encode()))
    return tuple(named)


def _match(presented: str | None, tokens: tuple[tuple[str, bytes], ...]) -> str | None:
    if presented is None:
        return None
    # Every entry is compared, in constant time, whichever matches.
    found = [name for name, token in tokens if any_matches(presented, [token])]
    return f"api:{found[0]}" if found else None


def _bearer(req: Request) -> str | None:
    scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def session_key(settings: Settings) -> bytes:
    """The key session cookies are signed with: scrypt of CONSOLE_PASSWORD, salted by
    SECRET_KEY. The same in every process (no shared state needed); changing either signs
    everybody out. Without SECRET_KEY a stolen cookie could be used to guess the password
    offline, slowly: set SECRET_KEY in production."""
    password = (settings.console_password or "").encode()
    salt = SESSION_SALT + (settings.secret_key or "").encode()
    return hashlib.scrypt(password, salt=salt, n=2**14, r=8, p=1, dklen=32)


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure exactly when the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def configure_sessions(app: Flask, settings: Settings) -> None:
    app.secret_key = session_key(settings)
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME="tavus_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/console",
        PERMANENT_SESSION_LIFETIME=12 * 3600,
    )


def password_matches(settings: Settings, presented: str) -> bool:
    return bool(settings.console_password) and any_matches(
        presented, [settings.console_password.encode()]
    )


def csrf_token() -> str:
    """The session's CSRF token, made on first use; every form carries it."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def csrf_valid(req: Request) -> bool:
    expected = session.get(CSRF_FIELD)
    presented = req.form.get(CSRF_FIELD) or req.headers.get("X-CSRF-Token") or ""
    return bool(expected) and any_matches(presented, [expected.encode()])


class SigninThrottle:
    """Failed sign-ins per client address, counted in Redis for a fixed window."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    def _key(self, address: str) -> str:
        return THROTTLE_PREFIX + hashlib.blake2b(address.encode(), digest_size=12).hexdigest()

    def blocked_for(self, address: str) -> int:
        """Seconds until this address may try again; 0 if it may now."""
        key = self._key(address)
        failures = int(self._redis.get(key) or 0)
        if failures < SIGNIN_LIMIT:
            return 0
        return max(1, int(self._redis.ttl(key)))

    def failed(self, address: str) -> None:
        key = self._key(address)
        with self._redis.pipeline() as pipe:
            # The window starts at the first failure (SET NX; EXPIRE NX needs Redis 7).
            pipe.set(key, 0, ex=SIGNIN_WINDOW_SECONDS, nx=True)
            pipe.incr(key)
            pipe.execute()

    def succeeded(self, address: str) -> None:
        self._redis.delete(self._key(address))
