"""The verifier registry: provider name -> factory. Adding a provider is one module, one line."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from schemas.settings import Settings

from .azure_blob import AzureBlobVerifier
from .base import StorageVerifier
from .gcs import GcsVerifier
from .s3 import S3Verifier

VerifierFactory = Callable[[Settings], StorageVerifier]

VERIFIERS: dict[str, VerifierFactory] = {
    S3Verifier.provider: S3Verifier.from_settings,
    GcsVerifier.provider: GcsVerifier.from_settings,
    AzureBlobVerifier.provider: AzureBlobVerifier.from_settings,
}


@cache
def verifier_for(provider: str, settings: Settings) -> StorageVerifier:
    """One verifier (and so one SDK client and connection pool) per provider per process.

    Celery's pool processes fork before their first task, so no client crosses a fork.
    """
    return VERIFIERS[provider](settings)
