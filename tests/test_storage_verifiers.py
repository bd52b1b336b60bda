"""Each verifier against its real stand-in (moto, gcp-storage-emulator, Azurite): what it reports
for an object, and how every failure maps onto Missing / StorageUnavailable / StorageRefused /
AccessDenied.
A dead or hung endpoint must cost seconds, not the SDKs' default minute and more."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest

from schemas.settings import Settings
from tests.services import free_port
from tests.storage_fixtures import BUCKET, PROVIDERS
from tests.storage_services import (
    LOCKED_ACCOUNT,
    LOCKED_BUCKET,
    Emulators,
    SilentEndpoint,
)
from workers.storage import verifiers
from workers.storage.azure_blob import emulator_endpoint
from workers.storage.base import StorageVerifier
from workers.storage.errors import AccessDenied, Missing, StorageRefused, StorageUnavailable
from workers.storage.locations import ObjectLocation

pytestmark = pytest.mark.integration


@dataclass
class Target:
    verifier: StorageVerifier
    provider: str
    emulators: Emulators
    settings: Settings

    def at(self, container: str, key: str, account: str = "devstoreaccount1") -> ObjectLocation:
        uri = self.emulators.uri(self.provider, container, key, account)
        if self.provider == "azure_blob":  # the URI names the endpoint the verifier was given
            endpoint = emulator_endpoint(self.settings.azure_storage_connection_string)
            uri = uri.replace(self.emulators.azurite.url, endpoint.rsplit("/", 1)[0])
        return verifiers.locate(self.provider, uri, self.settings)


def target(
    provider: str,
    emulators: Emulators,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str | None = None,
    timeout: float = 2.0,
) -> Target:
    """A verifier made as the worker makes it: from settings and the SDKs' own variables."""
    env = emulators.worker_env()
    if endpoint is not None:
        env["AWS_ENDPOINT_URL_S3"] = env["STORAGE_EMULATOR_HOST"] = endpoint
        env["AZURE_STORAGE_CONNECTION_STRING"] = env["AZURE_STORAGE_CONNECTION_STRING"].replace(
            emulators.azurite.url, endpoint
        )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    connection = env["AZURE_STORAGE_CONNECTION_STRING"]
    settings = Settings(storage_timeout_seconds=timeout, azure_storage_connection_string=connection)
    return Target(
        verifiers.PROVIDERS[provider].from_settings(settings), provider, emulators, settings
    )


def new_key() -> str:
    return f"recordings/{uuid.uuid4().hex}.mp4"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_present_object_reports_its_facts(provider, emulators, monkeypatch) -> None:
    key = new_key()
    emulators.upload(provider, BUCKET, key, b"\x00\x00\x00\x18ftypmp42" * 100)
    facts = target(provider, emulators, monkeypatch).verifier.stat(
        target(provider, emulators, monkeypatch).at(BUCKET, key)
    )
    assert facts.size == 1200
    assert facts.content_type == "video/mp4"
    assert facts.etag and not facts.etag.startswith('"')
    assert facts.last_modified is not None and facts.last_modified.tzinfo is not None
    assert facts.checksum and facts.checksum.split(":")[0] in ("md5", "crc32", "crc32c")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_absent_object_is_missing(provider, emulators, monkeypatch) -> None:
    where = target(provider, emulators, monkeypatch)
    with pytest.raises(Missing):
        where.verifier.stat(where.at(BUCKET, new_key()))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_absent_bucket_is_permanent_not_missing(provider, emulators, monkeypatch) -> None:
    where = target(provider, emulators, monkeypatch)
    with pytest.raises(StorageRefused, match=r"does not exist|no such container") as failed:
        where.verifier.stat(where.at("no-such-bucket", new_key()))
    assert not isinstance(failed.value, AccessDenied)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unreadable_object_is_access_denied(provider, emulators, monkeypatch) -> None:
    key = new_key()
    if provider == "azure_blob":  # an account whose key the worker does not hold
        emulators.upload(provider, BUCKET, key, b"data", account=LOCKED_ACCOUNT)
        location = target(provider, emulators, monkeypatch).at(BUCKET, key, LOCKED_ACCOUNT)
    else:  # a bucket the worker's IAM user (moto) / service account (proxy) may not read
        emulators.upload(provider, LOCKED_BUCKET, key, b"data")
        location = target(provider, emulators, monkeypatch).at(LOCKED_BUCKET, key)
    with pytest.raises(AccessDenied, match="403"):
        target(provider, emulators, monkeypatch).verifier.stat(location)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_refused_connection_fails_fast_as_transient(provider, emulators, monkeypatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    where = target(provider, emulators, monkeypatch, endpoint=dead)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="unreachable"):
        where.verifier.stat(where.at(BUCKET, new_key()))
    assert time.monotonic() - started < 3  # the SDKs' defaults retry for 85-100 s


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hung_endpoint_times_out_as_transient(provider, emulators, monkeypatch) -> None:
    silent = SilentEndpoint()
    try:
        where = target(provider, emulators, monkeypatch, endpoint=silent.url, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            where.verifier.stat(where.at(BUCKET, new_key()))
        assert time.monotonic() - started < 5  # one read timeout, no SDK retries
    finally:
        silent.close()
