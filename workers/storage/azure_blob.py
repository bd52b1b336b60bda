"""Azure Blob Storage, through azure-storage-blob only.

Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` when set (account key or SAS) for its own
account, and for any account on the same emulator endpoint (Azurite); otherwise, and for other
accounts on Azure, ``DefaultAzureCredential`` (Entra ID: workload identity, managed identity,
environment). By default the SDK retries 3 times (10 for connections) with exponential waits and
a 20 s connect / 60 s read timeout; here there are no SDK retries and explicit timeouts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

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

from .base import JSON, ObjectFacts, checksum, unquote_etag
from .errors import AccessDenied, Missing, StorageError, StorageRefused, StorageUnavailable
from .locations import LocationRefused, ObjectLocation, object_key

log = logging.getLogger(__name__)

_TRANSIENT_STATUSES = {408, 429, 500, 502, 503, 504}
AZURE_HOST_SUFFIX = ".blob.core.windows.net"
_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def emulator_endpoint(connection_string: str | None) -> str | None:
    """The blob endpoint of a connection string that names an emulator rather than Azure
    (``BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1``, ``UseDevelopmentStorage=true``)."""
    if not connection_string:
        return None
    url = BlobServiceClient.from_connection_string(connection_string).url.rstrip("/")
    host = (urlsplit(url).hostname or "").lower()
    return None if host.endswith(AZURE_HOST_SUFFIX) else url


class AzureBlobVerifier:
    """``https://<account>.blob.core.windows.net/<container>/<blob>``, and Azurite's path style
    ``http(s)://<host>:<port>/<account>/<container>/<blob>`` only on the emulator endpoint
    AZURE_STORAGE_CONNECTION_STRING names (exactly its scheme, host and port);
    ``azure_blob:<account>/<container>`` in RECORDING_LOCATIONS."""

    provider: ClassVar[str] = "azure_blob"
    schemes: ClassVar[tuple[str, ...]] = ("https", "http")

    @classmethod
    def parse(cls, uri: str, settings: Settings) -> ObjectLocation:
        try:
            emulator = emulator_endpoint(settings.azure_storage_connection_string)
        except ValueError as exc:  # not refused: the configuration is wrong, not the payload
            raise ValueError(f"AZURE_STORAGE_CONNECTION_STRING: {exc}") from None
        return _azure(uri, emulator)

    @staticmethod
    def entry(name: str) -> str:
        account, slash, container = name.partition("/")
        if not (account and slash and container) or "/" in container:
            raise ValueError("wrong shape: expected azure_blob:<account>/<container>")
        return name.lower()  # account names are case-insensitive

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
        account_url = _account_url(where.account or "", where.endpoint)
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


def _azure(uri: str, azure_emulator: str | None) -> ObjectLocation:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise LocationRefused(f"malformed URL: {exc}") from exc
    if parts.query or parts.fragment:
        # A SAS token would be a secret in a payload; we read with our own credentials only.
        raise LocationRefused("the URL has a query string or fragment")
    if parts.username is not None or parts.password is not None:
        raise LocationRefused("the URL carries credentials")
    host = (parts.hostname or "").lower()
    segments = parts.path.split("/")[1:]  # the path starts with "/"
    if parts.scheme.lower() == "https" and port is None and host.endswith(AZURE_HOST_SUFFIX):
        account, endpoint = host[: -len(AZURE_HOST_SUFFIX)], None
    elif azure_emulator and _same_origin(parts, azure_emulator):
        if not segments or not segments[0]:
            raise LocationRefused("emulator URL without an account")
        account, endpoint, segments = segments[0], _origin(urlsplit(azure_emulator)), segments[1:]
    else:
        raise LocationRefused(
            f"{host or 'the URL'} is not an Azure Blob endpoint "
            f"(https://<account>{AZURE_HOST_SUFFIX}/<container>/<blob>)"
        )
    if not _AZURE_ACCOUNT.match(account):
        raise LocationRefused(f"{account!r} is not a valid Azure storage account name")
    if len(segments) < 2 or not segments[0]:
        raise LocationRefused("the URL names no container and blob")
    container, blob = unquote(segments[0]), object_key(unquote("/".join(segments[1:])))
    if not _AZURE_CONTAINER.match(container):
        raise LocationRefused(f"{container!r} is not a valid Azure container name")
    return ObjectLocation(
        AzureBlobVerifier.provider,
        container,
        blob,
        account=account,
        endpoint=endpoint,
        uri=f"{_account_url(account, endpoint)}/{container}/{blob}",
    )


def _account_url(account: str, endpoint: str | None) -> str:
    return f"{endpoint}/{account}" if endpoint else f"https://{account}{AZURE_HOST_SUFFIX}"


def _origin(parts: SplitResult) -> str:
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port}"


def _same_origin(parts: SplitResult, emulator: str) -> bool:
    configured = urlsplit(emulator)
    if configured.port is None or parts.port is None:
        return False
    return _origin(parts) == _origin(configured)


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
