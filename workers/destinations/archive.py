"""Forwarding to a bucket, as an archive: ``FORWARD_<NAME>_URL=s3://<bucket>/<prefix>``,
``gs://<bucket>/<prefix>`` or ``azure_blob://<account>/<container>/<prefix>``.

Each event is one object at ``<prefix>/<kind>/<YYYY>/<MM>/<DD>/<event_id>.json`` (the day it was
received, UTC): the bytes Tavus sent, ``application/json``, with metadata ``kind``, ``type``,
``source`` and ``received_at``. Writing it again (a retry, ``redeliver``) writes the same bytes
at the same key: the archive holds each event once, whatever happens. (No ``type`` for the
kinds without an event type: Azure keeps no empty metadata, so none of the three gets one.)

The objects are written with the clients that verify recordings (``workers/storage``): the
same SDKs, credentials (``AWS_*``, ``AWS_ENDPOINT_URL_S3``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_CONNECTION_STRING`` or Entra ID), timeouts
(``STORAGE_TIMEOUT_SECONDS``) and error mapping: unreachable, throttled or 5xx is retried;
denied, or no such bucket, fails at once.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from schemas.settings import DestinationSettings, ForwardDestination, Settings
from schemas.times import iso
from workers.errors import Permanent
from workers.storage.azure_blob import AzureBlobVerifier, emulator_endpoint
from workers.storage.errors import Missing
from workers.storage.gcs import GcsVerifier
from workers.storage.locations import ObjectLocation
from workers.storage.s3 import S3Verifier
from workers.storage.verifiers import verifier_for

from .base import Answer, ForwardedEvent, UrlDestination

AZURE_BLOB = AzureBlobVerifier.provider
# scheme -> the workers/storage provider that writes it
PROVIDERS = {"s3": S3Verifier.provider, "gs": GcsVerifier.provider, "azure_blob": AZURE_BLOB}


class ArchiveDestination(UrlDestination):
    settings = DestinationSettings(
        "archive",
        tuple(PROVIDERS),
        about="`s3://<bucket>/<prefix>`, `gs://<bucket>/<prefix>`, "
        "`azure_blob://<account>/<container>/<prefix>`: one object per event at "
        "`<prefix>/<kind>/<YYYY>/<MM>/<DD>/<event_id>.json`, with the credentials and "
        "`STORAGE_TIMEOUT_SECONDS` of recording verification. No variables of its own.",
    )

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        self.query(config, ())  # no options: a ?... would be read as part of nothing
        self.scheme, self.provider = config.scheme, PROVIDERS[config.scheme]
        segments = [unquote(part) for part in config.parts.path.split("/") if part]
        self.account = None
        if self.provider == AZURE_BLOB:
            if not segments:
                raise self.refuse(config, "name the container: azure_blob://<account>/<container>")
            self.account = config.parts.netloc
            self.container, segments = segments[0], segments[1:]
        else:
            self.container = config.parts.netloc
        if not self.container or "@" in config.parts.netloc:
            raise self.refuse(config, f"name the bucket: {config.scheme}://<bucket>/<prefix>")
        self.prefix = "/".join(segments)
        self._settings = settings

    def lease_seconds(self) -> float:
        return 2 * self._settings.storage_timeout_seconds + 15

    def key(self, event: ForwardedEvent) -> str:
        day = event.received_at.strftime("%Y/%m/%d")
        name = f"{event.kind or 'unclassified'}/{day}/{event.id}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    def deliver(self, event: ForwardedEvent) -> Answer:
        key = self.key(event)
        place = f"{self.account}/{self.container}" if self.account else self.container
        uri = f"{self.scheme}://{place}/{key}"
        where = ObjectLocation(
            self.provider, self.container, key, self.account, self._endpoint(), uri=uri
        )
        described = {
            "kind": event.kind,
            "type": event.event_type,  # none for the kinds that have no event type
            "source": event.source,
            "received_at": iso(event.received_at),
        }
        metadata = {name: value for name, value in described.items() if value}  # Azure: no ""
        try:
            verifier_for(self.provider, self._settings).put(
                where, event.raw.encode("utf-8"), metadata
            )
        except Missing as exc:  # writing: only the bucket or container can be missing
            raise Permanent(f"{self.container}: {exc.reason}") from None
        return Answer(excerpt=where.uri)

    def _endpoint(self) -> str | None:
        """Azurite's origin when AZURE_STORAGE_CONNECTION_STRING names it (as verifying)."""
        if self.provider != AZURE_BLOB:
            return None
        emulator = emulator_endpoint(self._settings.azure_storage_connection_string)
        return f"{urlsplit(emulator).scheme}://{urlsplit(emulator).netloc}" if emulator else None
