"""The providers, by name: adding one is a module with a ``StorageVerifier`` class and one line,
in ``BUILT_IN`` here or ``register(TheVerifier)`` in a module of TAVUS_EXTENSIONS."""

from __future__ import annotations

from functools import cache

from schemas.settings import Settings, SettingsError

from .azure_blob import AzureBlobVerifier
from .base import StorageVerifier
from .gcs import GcsVerifier
from .locations import Allowlist, LocationRefused, ObjectLocation, scheme_of
from .s3 import S3Verifier

BUILT_IN: tuple[type[StorageVerifier], ...] = (S3Verifier, GcsVerifier, AzureBlobVerifier)
PROVIDERS: dict[str, type[StorageVerifier]] = {cls.provider: cls for cls in BUILT_IN}


def register(cls: type[StorageVerifier]) -> type[StorageVerifier]:
    """Add a provider (from a TAVUS_EXTENSIONS module); usable as a class decorator."""
    taken = {scheme for other in PROVIDERS.values() if other is not cls for scheme in other.schemes}
    if cls.provider in PROVIDERS and PROVIDERS[cls.provider] is not cls:
        raise ValueError(f"storage provider {cls.provider!r} is already registered")
    if taken & set(cls.schemes):
        raise ValueError(
            f"{cls.provider}: the URI schemes {sorted(taken & set(cls.schemes))} are taken"
        )
    PROVIDERS[cls.provider] = cls
    return cls


def locate(provider: str | None, storage_uri: str | None, settings: Settings) -> ObjectLocation:
    """The location a ``recording_ready`` names (``storage_provider``, ``storage_uri``), parsed
    by the provider of its scheme, or ``LocationRefused`` with the reason."""
    named = (provider or "").strip().lower() or None
    if named is not None and named not in PROVIDERS:
        raise LocationRefused(f"unknown storage_provider {provider!r}")
    uri = (storage_uri or "").strip()
    if not uri:
        raise LocationRefused("no storage_uri")
    scheme = scheme_of(uri)
    by_scheme = {s: cls for cls in PROVIDERS.values() for s in cls.schemes}
    if scheme not in by_scheme:
        expected = ", ".join(f"{s}://" for s in by_scheme)
        raise LocationRefused(f"unsupported scheme {scheme!r}: expected {expected}")
    where = by_scheme[scheme].parse(uri, settings)
    if named is not None and named != where.provider:
        raise LocationRefused(
            f"storage_provider {named!r} does not match the URI's {where.provider!r}"
        )
    return where


def allowlist(settings: Settings) -> Allowlist:
    """RECORDING_LOCATIONS, each entry read by its provider's rule; ValueError when one is
    malformed or names no provider this process has."""
    rules = {name: cls.entry for name, cls in PROVIDERS.items()}
    return Allowlist.parse(settings.recording_locations, rules)


def check(settings: Settings) -> None:
    """At start: RECORDING_LOCATIONS names only providers this process has, in their form."""
    try:
        allowlist(settings)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


@cache
def verifier_for(provider: str, settings: Settings) -> StorageVerifier:
    """One verifier (and so one SDK client and connection pool) per provider per process.

    Celery's pool processes fork before their first task, so no client crosses a fork.
    """
    return PROVIDERS[provider].from_settings(settings)
