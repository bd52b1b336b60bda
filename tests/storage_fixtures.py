"""Session-wide storage stand-ins (moto, gcp-storage-emulator, Azurite), started once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.storage_services import (
    LOCKED_BUCKET,
    Azurite,
    Emulators,
    GcsEmulator,
    GcsForbiddingProxy,
    MotoServer,
)

BUCKET = "recordings"
UNLISTED_BUCKET = "unlisted-recordings"  # exists, but RECORDING_LOCATIONS never lists it
PROVIDERS = ("s3", "gcs", "azure_blob")


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    logs = tmp_path_factory.mktemp("storage")
    started: list = []
    try:
        moto = MotoServer(logs / "moto.log").start()
        started.append(moto)
        gcs = GcsEmulator(logs / "gcs.log").start()
        started.append(gcs)
        proxy = GcsForbiddingProxy(gcs.port, forbidden={LOCKED_BUCKET}).start()
        started.append(proxy)
        azurite = Azurite(logs / "azurite.log").start(tmp_path_factory.mktemp("azurite"))
        started.append(azurite)
        found = Emulators(moto, gcs, proxy, azurite)
        found.create_containers((BUCKET, LOCKED_BUCKET, UNLISTED_BUCKET))
        yield found
    finally:
        for server in reversed(started):
            server.stop()
