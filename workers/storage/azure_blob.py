"""Azure Blob Storage, through azure-storage-blob only.

Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` when set (account key or SAS) for its own
account, and for any account on the same emulator endpoint (Azurite); otherwise, and for other
accounts on Azure, ``DefaultAzureCredential`` (Entra ID: workload identity, managed identity,
environment). By default the SDK retries 3 times (10 for connections) with exponential waits and
a 20 s connect / 60 s read timeout; here there are no SDK retries and explicit timeouts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError, DefaultAzureCredential
from azure.storage.blob import BlobServiceClient, ContentSettings

from schemas.settings import Settings

from .base import (
    JSON,
    AccessDenied,
    Missing,
    ObjectFacts,
    StorageError,
    StorageRefused,
    StorageUnavailable,
    checksum,
    unquote_etag,
)
from .locations import AZURE_HOST_SUFFIX, ObjectLocation

log = logging.getLogger(__name__)

_TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}


def emulator_endpoint(connection_string: str | None) -> str | None:
    """The blob endpoint of a connection string that names an emulator rather than Azure
    (``BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1``, ``UseDevelopmentStorage=true``)."""
    if not connection_string:
        return None
    url = BlobServiceClient.from_connection_string(connection_string).url.rstrip("/")
    host = (urlsplit(url).hostname or "").lower()
    return None if host.endswith(AZURE_HOST_SUFFIX) else url


class AzureBlobVerifier:
    provider: ClassVar[str] = "azure_blob"

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureBlobVerifier:
        return cls(settings.storage_timeout_seconds, settings.azure_storage_connection_string)

    def __init__(self, timeout: float, connection_string: str | None) -> None:
        self._options: dict[str, Any] = {
            "connection_timeout": timeout,
            "read_timeout": timeout,
            "retry_total": 0,  # one try per task attempt; the task backs off
        }
        self._primary = (
            BlobServiceClient.from_connection_string(connection_string, **self._options)
            if connection_string
            else None
        )
        self._services: dict[str, BlobServiceClient] = {}
        self._default_credential: DefaultAzureCredential | None = None

    def stat(self, where: ObjectLocation) -> ObjectFacts:
        try:
            blob = self._service(where).get_blob_client(where.container, where.key)
            props = blob.get_blob_properties()
        except AzureError as exc:
            raise _failure(exc) from exc
        settings = props.content_settings
        return ObjectFacts(
            size=int(props.size or 0),
            etag=unquote_etag(props.etag),
            checksum=checksum("md5", settings.content_md5),
            content_type=settings.content_type,
            last_modified=props.last_modified,
            version=props.version_id,
        )

    def put(self, where: ObjectLocation, data: bytes, metadata: Mapping[str, str]) -> None:
        try:
            blob = self._service(where).get_blob_client(where.container, where.key)
            blob.upload_blob(
                data,
                overwrite=True,
                metadata=dict(metadata),
                content_settings=ContentSettings(content_type=JSON),
            )
        except AzureError as exc:
            raise _failure(exc) from exc

    def _service(self, where: ObjectLocation) -> BlobServiceClient:
        """The client for the location's account, with the credential that account gets."""
        account_url = (
            f"{where.endpoint}/{where.account}"
            if where.endpoint
            else f"https://{where.account}{AZURE_HOST_SUFFIX}"
        )
        primary = self._primary
        if primary is not None and primary.url.rstrip("/") == account_url:
            return primary
        if account_url not in self._services:
            if primary is not None and where.endpoint:
                credential: Any = primary.credential  # the emulator's key, for its other accounts
            else:
                credential = self._entra_credential()
            self._services[account_url] = BlobServiceClient(
                account_url, credential=credential, **self._options
            )
        return self._services[account_url]

    def _entra_credential(self) -> DefaultAzureCredential:
        if self._default_credential is None:
            self._default_credential = DefaultAzureCredential()
        return self._default_credential


def _failure(exc: AzureError) -> StorageError:
    if isinstance(exc, CredentialUnavailableError):
        return StorageRefused(f"no Azure credentials: {exc.message}")
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or ""
        code = getattr(code, "value", code)  # a StorageErrorCode enum or a plain string
        said = f"Azure answered {exc.status_code} {code}".strip()
        if isinstance(exc, ResourceNotFoundError) or exc.status_code == 404:
            if code in ("ContainerNotFound", "ResourceNotFound"):
                return StorageRefused(f"{said}: no such container")
            return Missing(said)
        if isinstance(exc, ClientAuthenticationError) or exc.status_code in (401, 403):
            return AccessDenied(said)
        if exc.status_code in _TRANSIENT_STATUSES:
            return StorageUnavailable(said)
        return StorageRefused(said)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return StorageUnavailable(f"Azure Blob unreachable: {exc.message}")
    return StorageRefused(f"Azure request failed: {exc.message}")
