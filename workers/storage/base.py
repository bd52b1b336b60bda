"""The verifier contract: what a verifier is given, what it answers, and how it fails.

A verifier asks one provider, through its SDK only, for the metadata of one object. It answers
``ObjectFacts`` or raises one of three errors (``errors.py``), mapped from the SDK's own exceptions
inside the provider module (``raise ... from exc``), so the retry logic reads the type and never an
SDK:

- ``Missing``: the object is not there (yet): retried with backoff within the wait window;
- ``StorageUnavailable``: timeout, connection refused, 5xx, throttling: retried with backoff and
  jitter;
- ``StorageRefused`` (``AccessDenied`` among them): no retry, recorded and alerted.

They belong to ``workers.errors``' two families (transient, permanent), so a storage error that
escapes a task is classified like any other.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol

from schemas.settings import Settings

from .locations import ObjectLocation

JSON = "application/json"  # what an archive destination writes


@dataclass(frozen=True)
class ObjectFacts:
    """What the provider says about the object, recorded on the conversation's recording."""

    size: int
    etag: str | None = None
    checksum: str | None = None  # "<algorithm>:<base64>", e.g. "md5:XUFAKrxLKna5cZ2REBfFkg=="
    content_type: str | None = None
    last_modified: datetime | None = None
    version: str | None = None  # S3 version id, GCS generation, Azure version id


class StorageVerifier(Protocol):
    """One per provider: how its locations are written (``schemes``, ``parse``, ``entry``);
    ``stat`` a location, or raise Missing, StorageUnavailable or StorageRefused; ``put`` writes
    one (an archive destination), failing the same way, Missing for a bucket or container that
    does not exist."""

    provider: ClassVar[str]  # its name in RECORDING_LOCATIONS and in ``storage_provider``
    schemes: ClassVar[tuple[str, ...]]  # the URI schemes it parses

    @classmethod
    def parse(cls, uri: str, settings: Settings) -> ObjectLocation:
        """The location ``uri`` names, by the service's naming rules, or LocationRefused with
        the reason. No network."""
        ...

    @staticmethod
    def entry(name: str) -> str:
        """A RECORDING_LOCATIONS name (after ``<provider>:``) in the form ``ObjectLocation.
        allow_entry`` gives, or ValueError saying what shape it should have."""
        ...

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageVerifier: ...

    def stat(self, where: ObjectLocation) -> ObjectFacts: ...

    def put(self, where: ObjectLocation, data: bytes, metadata: Mapping[str, str]) -> None:
        """Write ``data`` (JSON) at ``where`` with ``metadata``, replacing what is there."""
        ...


def checksum(algorithm: str, value: str | bytes | bytearray | None) -> str | None:
    """``"md5:<base64>"`` from a base64 string or raw digest bytes; None when there is none."""
    if not value:
        return None
    if isinstance(value, bytes | bytearray):
        value = base64.b64encode(bytes(value)).decode("ascii")
    return f"{algorithm}:{value}"


def unquote_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None
