"""Where a recording is, parsed strictly, and whether we may look there at all.

Pure code, no SDK: a payload names a location, and this module decides before any network call
whether it is a well-formed location of a known provider *and* one the operator listed in
``RECORDING_LOCATIONS``. That is the SSRF guard: a payload can never make the worker touch a
bucket, container or host nobody configured.

Accepted forms (anything else is refused with a reason):

- ``s3://<bucket>/<key>``, or the older ``bucket_name`` + ``s3_key`` pair;
- ``gs://<bucket>/<object>``;
- ``https://<account>.blob.core.windows.net/<container>/<blob>``;
- ``http(s)://<host>:<port>/<account>/<container>/<blob>`` (Azurite's path style) only when an
  Azure emulator endpoint is configured, and only on exactly that scheme, host and port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

S3 = "s3"
GCS = "gcs"
AZURE_BLOB = "azure_blob"
PROVIDERS = (S3, GCS, AZURE_BLOB)

AZURE_HOST_SUFFIX = ".blob.core.windows.net"
MAX_KEY_BYTES = 1024

# Naming rules of each service, so a typo fails here with a reason rather than at the SDK.
_S3_BUCKET = re.compile(
    r"^(?!xn--)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
_GCS_BUCKET = re.compile(r"^(?!goog)[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_AZURE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZURE_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class LocationRefused(ValueError):
    """The location is malformed or not allowed; ``reason`` says which, safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ObjectLocation:
    """One object in one provider's storage, as the verifiers take it."""

    provider: str
    container: str  # the S3 / GCS bucket or the Azure container
    key: str  # the object key or blob name, decoded
    account: str | None = None  # Azure storage account
    endpoint: str | None = None  # Azure emulator base, e.g. "http://127.0.0.1:10000"; None: Azure

    @property
    def allow_entry(self) -> str:
        """This location's entry in RECORDING_LOCATIONS."""
        if self.provider == AZURE_BLOB:
            return f"{AZURE_BLOB}:{self.account}/{self.container}"
        return f"{self.provider}:{self.container}"

    @property
    def uri(self) -> str:
        """The canonical URI, for logs and alerts."""
        if self.provider == S3:
            return f"s3://{self.container}/{self.key}"
        if self.provider == GCS:
            return f"gs://{self.container}/{self.key}"
        base = (
            self.endpoint + f"/{self.account}"
            if self.endpoint
            else f"https://{self.account}{AZURE_HOST_SUFFIX}"
        )
        return f"{base}/{self.container}/{self.key}"


@dataclass(frozen=True)
class Allowlist:
    """The locations the operator listed in RECORDING_LOCATIONS; nothing else is ever checked."""

    entries: frozenset[str]

    @classmethod
    def parse(cls, items: Iterable[str]) -> Allowlist:
        entries = set()
        for item in items:
            provider, _, name = item.strip().partition(":")
            if provider not in PROVIDERS or not name:
                raise ValueError(f"RECORDING_LOCATIONS entry {item!r}: unknown provider")
            if (provider == AZURE_BLOB) != ("/" in name):
                raise ValueError(f"RECORDING_LOCATIONS entry {item!r}: wrong shape")
            entries.add(f"{provider}:{name.lower() if provider == AZURE_BLOB else name}")
        return cls(frozenset(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def check(self, where: ObjectLocation) -> None:
        if where.allow_entry not in self.entries:
            raise LocationRefused(f"{where.allow_entry} is not listed in RECORDING_LOCATIONS")


def locate(
    provider: str | None,
    storage_uri: str | None,
    bucket_name: str | None = None,
    s3_key: str | None = None,
    azure_emulator: str | None = None,
) -> ObjectLocation:
    """The location a ``recording_ready`` names, or ``LocationRefused`` with the reason.

    ``azure_emulator`` is the configured emulator's blob endpoint (from the connection string);
    without it, the path-style form is refused like any other unknown URL.
    """
    named = (provider or "").strip().lower() or None
    if named is not None and named not in PROVIDERS:
        raise LocationRefused(f"unknown storage_provider {provider!r}")
    if storage_uri:
        where = _parse_uri(storage_uri.strip(), azure_emulator)
    elif bucket_name and s3_key:
        where = _s3(bucket_name, s3_key)
    else:
        raise LocationRefused("no storage_uri, and no bucket_name + s3_key")
    if named is not None and named != where.provider:
        raise LocationRefused(
            f"storage_provider {named!r} does not match the URI's {where.provider!r}"
        )
    return where


def _parse_uri(uri: str, azure_emulator: str | None) -> ObjectLocation:
    if _CONTROL.search(uri):
        raise LocationRefused("the URI contains control characters")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise LocationRefused("not a URI: expected s3://, gs:// or https://")
    scheme = scheme.lower()
    if scheme in ("s3", "gs"):
        bucket, slash, key = rest.partition("/")
        if not slash:
            raise LocationRefused(f"{scheme}:// URI without an object key")
        return _s3(bucket, key) if scheme == "s3" else _gcs(bucket, key)
    if scheme in ("https", "http"):
        return _azure(uri, azure_emulator)
    raise LocationRefused(f"unsupported scheme {scheme!r}: expected s3://, gs:// or https://")


def _s3(bucket: str, key: str) -> ObjectLocation:
    if not _S3_BUCKET.match(bucket):
        raise LocationRefused(f"{bucket!r} is not a valid S3 bucket name")
    return ObjectLocation(S3, bucket, _key(key))


def _gcs(bucket: str, key: str) -> ObjectLocation:
    if not _GCS_BUCKET.match(bucket) or any(len(part) > 63 for part in bucket.split(".")):
        raise LocationRefused(f"{bucket!r} is not a valid GCS bucket name")
    if key in (".", ".."):
        raise LocationRefused("'.' and '..' are not GCS object names")
    return ObjectLocation(GCS, bucket, _key(key))


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
    container, blob = unquote(segments[0]), unquote("/".join(segments[1:]))
    if not _AZURE_CONTAINER.match(container):
        raise LocationRefused(f"{container!r} is not a valid Azure container name")
    return ObjectLocation(AZURE_BLOB, container, _key(blob), account=account, endpoint=endpoint)


def _key(key: str) -> str:
    if not key:
        raise LocationRefused("empty object key")
    if _CONTROL.search(key):
        raise LocationRefused("the object key contains control characters")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise LocationRefused(f"the object key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _origin(parts: SplitResult) -> str:
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port}"


def _same_origin(parts: SplitResult, emulator: str) -> bool:
    configured = urlsplit(emulator)
    if configured.port is None or parts.port is None:
        return False
    return _origin(parts) == _origin(configured)


def redact(uri: str | None) -> str | None:
    """An http(s) URI without query, fragment or credentials, fit for logs and alerts."""
    if not uri or not uri.lower().startswith(("http://", "https://")):
        return uri  # s3:// and gs:// carry no secrets; "?" is a legal character in their keys
    scheme, _, rest = uri.partition("://")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
