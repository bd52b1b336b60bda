"""Encryption at rest: content sealed with ``ENCRYPTION_KEYS`` (Fernet), wherever it rests.

A sealed text is ``fernet:<key id>:<Fernet token>``. The key id is the first 8 hex digits of
the SHA-256 of the key: it names, never reveals, the key a text was sealed with, so a text whose
key was removed from ``ENCRYPTION_KEYS`` fails with an error that says which key to put back
(``MissingKey``), and ``rotate-keys`` finds what is not yet under the first key with a plain
``NOT LIKE 'fernet:<first id>:%'``. ``cryptography``'s ``MultiFernet`` would try each key in turn
and could only say that none fitted; the id picks the one ``Fernet`` at once.

The first key seals, every key opens. A text that is not sealed (stored before encryption was
turned on) is read as it is, until ``rotate-keys`` seals it. The receiver seals the body of each
queued message (and so of each spooled file), the workers the content columns of the store: this
module is shared by both, hence its place in ``schemas`` (which imports nothing of ours).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"
_SEALED = re.compile(r"^fernet:([0-9a-f]{8}):")
ID_LENGTH = 8


class CryptoError(Exception):
    """Content cannot be read with the keys this process holds."""


class MissingKey(CryptoError):
    """Content sealed with a key that ``ENCRYPTION_KEYS`` does not hold."""

    def __init__(self, key_id: str, held: Sequence[str]) -> None:
        self.key_id = key_id
        have = ", ".join(held) if held else "none: ENCRYPTION_KEYS is not set"
        super().__init__(
            f"content is encrypted with key {key_id}, which ENCRYPTION_KEYS does not hold "
            f"(its keys: {have}); add that key back to ENCRYPTION_KEYS (anywhere after the "
            "first), and run `tavus-callbacks rotate-keys` before removing it again"
        )


class Corrupt(CryptoError):
    """Sealed content whose key is held but whose token does not open: altered or truncated."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"content sealed with key {key_id} does not open: altered or damaged")


def key_id(key: str) -> str:
    """The short, public name of a key: 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.strip().encode()).hexdigest()[:ID_LENGTH]


def generate_key() -> str:
    return Fernet.generate_key().decode()


def is_key(key: str) -> bool:
    """A Fernet key: 32 bytes, URL-safe base64."""
    try:
        Fernet(key.strip().encode())
    except (ValueError, TypeError):
        return False
    return True


def sealed_with(text: str) -> str | None:
    """The id of the key ``text`` is sealed with; None for a text that is not sealed."""
    found = _SEALED.match(text)
    return found.group(1) if found else None


class Cipher:
    """The keys of ``ENCRYPTION_KEYS``, built once per process: the first seals, all open."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a cipher needs at least one key")
        self._fernets = {key_id(key): Fernet(key.strip().encode()) for key in keys}
        self.ids = tuple(self._fernets)
        self.primary = self.ids[0]
        self._seal = self._fernets[self.primary].encrypt
        self._prefix = f"{PREFIX}{self.primary}:"

    def seal(self, text: str | bytes) -> str:
        """``text`` sealed with the first key."""
        return self._prefix + self._seal(text.encode() if isinstance(text, str) else text).decode()

    def seal_body(self, body: str) -> str:
        """A queued message's body sealed, unless it is already: a body is a JSON text, which
        never starts as a sealed text does."""
        return body if body.startswith(PREFIX) else self.seal(body)

    def open(self, text: str) -> str:
        return opened(self, text)

    def current(self, text: str) -> bool:
        """Sealed with the first key already (``rotate-keys`` leaves it alone)."""
        return text.startswith(self._prefix)

    def fernet(self, kid: str) -> Fernet | None:
        return self._fernets.get(kid)


def opened(cipher: Cipher | None, text: str) -> str:
    """``text`` opened when sealed, as it is when not; ``MissingKey`` when its key is not held
    (or no key is, ``cipher`` None)."""
    kid = sealed_with(text) if text.startswith(PREFIX) else None
    if kid is None:
        return text
    fernet = cipher.fernet(kid) if cipher is not None else None
    if fernet is None:
        raise MissingKey(kid, cipher.ids if cipher is not None else ())
    try:
        return fernet.decrypt(text[len(PREFIX) + ID_LENGTH + 1 :].encode()).decode()
    except InvalidToken as exc:
        raise Corrupt(kid) from exc


def cipher_of(keys: Sequence[str]) -> Cipher | None:
    """The cipher of ``ENCRYPTION_KEYS``; None when it is empty (encryption off)."""
    return Cipher(keys) if keys else None
