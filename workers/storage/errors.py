"""How a verifier fails: three errors, mapped from each SDK's own exceptions inside the
provider module, so the retry logic reads the type and never an SDK. They belong to
``workers.errors``' two families (transient, permanent)."""

from __future__ import annotations

from typing import ClassVar

from workers import errors


class StorageError(Exception):
    """A verifier could not confirm the object; the subclass says whether to try again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Missing(StorageError):
    """No such object (yet): Tavus may still be writing or copying it."""


class StorageUnavailable(StorageError, errors.Transient):
    """The provider could not answer now: a timeout, a refused connection, 5xx, throttling."""


class StorageRefused(StorageError, errors.Permanent):
    """Asking again will not help: no such bucket or container, no credentials, bad request."""

    status: ClassVar[str] = "error"


class AccessDenied(StorageRefused):
    """The provider answered, and our credentials may not read this object."""

    status: ClassVar[str] = "access_denied"
