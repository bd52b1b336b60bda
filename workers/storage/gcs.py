"""Google Cloud Storage, through google-cloud-storage only.

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
workload identity, the metadata server); the endpoint from ``STORAGE_EMULATOR_HOST`` when set
(then the SDK itself uses anonymous credentials). By default the SDK retries for up to 120 s
with a 60 s timeout per call; here every call has ``retry=None`` and an explicit timeout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import ClassVar

import requests
from google.api_core import exceptions as api
from google.auth import exceptions as auth
from google.cloud import storage

from schemas.settings import Settings

from .base import JSON, ObjectFacts, checksum, unquote_etag
from .errors import AccessDenied, Missing, StorageError, StorageRefused, StorageUnavailable
from .locations import LocationRefused, ObjectLocation, bucket_location, plain_entry

log = logging.getLogger(__name__)

_REQUEST_LINE = re.compile(r"^[A-Z]+ \S+: ")
_SDK_ERRORS = (api.GoogleAPIError, auth.GoogleAuthError, requests.RequestException)
_GCS_BUCKET = re.compile(r"^(?!goog)[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def _gcs_bucket(name: str) -> bool:
    """GCS's bucket naming rules: a typo fails here with a reason rather than at the SDK."""
    return bool(_GCS_BUCKET.match(name)) and all(len(part) <= 63 for part in name.split("."))


class GcsVerifier:
    """``gs://<bucket>/<object>``; ``gcs:<bucket>`` in RECORDING_LOCATIONS."""

    provider: ClassVar[str] = "gcs"
    schemes: ClassVar[tuple[str, ...]] = ("gs",)
    entry = staticmethod(plain_entry)

    @classmethod
    def parse(cls, uri: str, settings: Settings) -> ObjectLocation:
        where = bucket_location(uri, cls.provider, "gs", service="GCS", valid=_gcs_bucket)
        if where.key in (".", ".."):
            raise LocationRefused("'.' and '..' are not GCS object names")
        return where

    @classmethod
    def from_settings(cls, settings: Settings) -> GcsVerifier:
        return cls(settings.storage_timeout_seconds)

    def __init__(self, timeout: float) -> None:
        self._timeout = (timeout, timeout)  # (connect, read)
        self._client: storage.Client | None = None

    def stat(self, where: ObjectLocation) -> ObjectFacts:
        try:
            bucket = self._connect().bucket(where.container)
            blob = bucket.blob(where.key)
            blob.reload(timeout=self._timeout, retry=None)
        except _SDK_ERRORS as exc:
            failure = _failure(exc)
            if isinstance(failure, Missing):
                self._check_bucket(bucket)
            raise failure from exc
        return ObjectFacts(
            size=int(blob.size or 0),
            etag=unquote_etag(blob.etag),
            checksum=checksum("md5", blob.md5_hash) or checksum("crc32c", blob.crc32c),
            content_type=blob.content_type,
            last_modified=blob.updated,
            version=None if blob.generation is None else str(blob.generation),
        )

    def put(self, where: ObjectLocation, data: bytes, metadata: Mapping[str, str]) -> None:
        try:
            blob = self._connect().bucket(where.container).blob(where.key)
            blob.metadata = dict(metadata)
            blob.upload_from_string(data, content_type=JSON, timeout=self._timeout, retry=None)
        except _SDK_ERRORS as exc:
            raise _failure(exc) from exc

    def _connect(self) -> storage.Client:
        """Made on first use, not at import: finding credentials may ask the metadata server."""
        if self._client is None:
            self._client = storage.Client()
        return self._client

    def _check_bucket(self, bucket: storage.Bucket) -> None:
        """GCS answers 404 for a missing object and a missing bucket alike; tell them apart."""
        try:
            bucket.reload(timeout=self._timeout, retry=None)
        except _SDK_ERRORS as exc:
            failure = _failure(exc)
            if isinstance(failure, Missing):
                raise StorageRefused(f"GCS bucket {bucket.name!r} does not exist") from exc
            # Readers often lack storage.buckets.get: then the object is what is missing.
            log.debug("bucket %s: %s", bucket.name, failure.reason)


def _failure(exc: Exception) -> StorageError:
    if isinstance(exc, api.GoogleAPICallError):
        # The SDK's message starts with the request line; the URL adds nothing for a reader.
        said = f"GCS answered {exc.code}: {_REQUEST_LINE.sub('', exc.message or '')}"
        if isinstance(exc, api.NotFound):
            return Missing(said)
        if isinstance(exc, api.Unauthorized | api.Forbidden):
            return AccessDenied(said)
        if isinstance(exc, api.TooManyRequests | api.ServerError) or exc.code == 408:
            return StorageUnavailable(said)
        return StorageRefused(said)
    if isinstance(exc, auth.DefaultCredentialsError):
        return StorageRefused(f"no Google credentials: {exc}")
    if isinstance(exc, auth.RefreshError):
        if getattr(exc, "retryable", False):
            return StorageUnavailable(f"Google token refresh failed: {exc}")
        return AccessDenied(f"Google credentials were refused: {exc}")
    if isinstance(exc, requests.exceptions.SSLError):
        return StorageRefused(f"TLS failure talking to GCS: {exc}")
    if isinstance(exc, requests.RequestException | auth.TransportError | auth.TimeoutError):
        return StorageUnavailable(f"GCS unreachable: {exc}")
    return StorageRefused(f"GCS request failed: {exc}")
