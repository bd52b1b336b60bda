"""Where a recording is, and whether we may look there at all: what every provider shares.

A payload names a location; before any network call the provider whose URI scheme it uses
parses it strictly (``StorageVerifier.parse``, with its service's naming rules), and it must be
one the operator listed in ``RECORDING_LOCATIONS``. That is the SSRF guard: a payload can never
make the worker touch a bucket, container or host nobody configured. Pure code: no SDK.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

MAX_KEY_BYTES = 1024

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
    container: str  # the bucket, the container, the folder: what RECORDING_LOCATIONS lists
    key: str  # the object key or blob name, decoded
    account: str | None = None  # where a provider has accounts above containers (Azure)
    endpoint: str | None = None  # an emulator's base, e.g. "http://127.0.0.1:10000"
    uri: str = field(default="", compare=False)  # the canonical URI, for logs and alerts

    @property
    def allow_entry(self) -> str:
        """This location's entry in RECORDING_LOCATIONS: ``<provider>:[<account>/]<container>``."""
        place = f"{self.account}/{self.container}" if self.account else self.container
        return f"{self.provider}:{place}"


# A RECORDING_LOCATIONS name (after "<provider>:") in its provider's normal form, or ValueError.
EntryRule = Callable[[str], str]


@dataclass(frozen=True)
class Allowlist:
    """The locations the operator listed in RECORDING_LOCATIONS; nothing else is ever checked."""

    entries: frozenset[str]

    @classmethod
    def parse(cls, items: Iterable[str], rules: Mapping[str, EntryRule]) -> Allowlist:
        """``rules``: each provider's rule for its entries (``StorageVerifier.entry``)."""
        entries = set()
        for item in items:
            provider, _, name = item.strip().partition(":")
            if provider not in rules or not name:
                raise ValueError(f"RECORDING_LOCATIONS entry {item!r}: unknown provider")
            try:
                entries.add(f"{provider}:{rules[provider](name)}")
            except ValueError as exc:
                raise ValueError(f"RECORDING_LOCATIONS entry {item!r}: {exc}") from None
        return cls(frozenset(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def check(self, where: ObjectLocation) -> None:
        if where.allow_entry not in self.entries:
            raise LocationRefused(f"{where.allow_entry} is not listed in RECORDING_LOCATIONS")


def scheme_of(uri: str) -> str:
    """The URI's scheme, lower-cased, which picks the provider that parses the rest."""
    if _CONTROL.search(uri):
        raise LocationRefused("the URI contains control characters")
    scheme, sep, _rest = uri.partition("://")
    if not sep:
        raise LocationRefused("not a URI: expected <scheme>://...")
    return scheme.lower()


def bucket_and_key(uri: str) -> tuple[str, str]:
    """``<scheme>://<bucket>/<key>``, the form of the bucket stores, split."""
    bucket, slash, key = uri.partition("://")[2].partition("/")
    if not slash:
        raise LocationRefused(f"{scheme_of(uri)}:// URI without an object key")
    return bucket, object_key(key)


def bucket_location(
    uri: str, provider: str, scheme: str, *, service: str, valid: Callable[[str], object]
) -> ObjectLocation:
    """``<scheme>://<bucket>/<key>`` in a bucket store, its bucket named as ``valid`` (the
    ``service``'s naming rules) says, with its canonical URI."""
    bucket, key = bucket_and_key(uri)
    if not valid(bucket):
        raise LocationRefused(f"{bucket!r} is not a valid {service} bucket name")
    return ObjectLocation(provider, bucket, key, uri=f"{scheme}://{bucket}/{key}")


def object_key(key: str) -> str:
    """A key any provider may be asked for: not empty, no control characters, not too long."""
    if not key:
        raise LocationRefused("empty object key")
    if _CONTROL.search(key):
        raise LocationRefused("the object key contains control characters")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise LocationRefused(f"the object key is longer than {MAX_KEY_BYTES} bytes")
    return key


def plain_entry(name: str) -> str:
    """The entry rule of providers without accounts: one bucket name, no ``/``."""
    if "/" in name:
        raise ValueError("wrong shape: expected <provider>:<bucket>")
    return name


def redact(uri: str | None) -> str | None:
    """An http(s) URI without query, fragment or credentials, fit for logs and alerts."""
    if not uri or not uri.lower().startswith(("http://", "https://")):
        return uri  # s3:// and gs:// carry no secrets; "?" is a legal character in their keys
    scheme, _, rest = uri.partition("://")
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
