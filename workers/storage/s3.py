"""Amazon S3 (and S3-compatible endpoints), through boto3 only.

Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID``..., a profile, the instance or
task role); the endpoint from ``AWS_ENDPOINT_URL_S3`` when set (moto, MinIO). Every call has a
connect and read timeout and no SDK-level retry: the task retries, by cause, with backoff.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import ClassVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, SSLError

from schemas.settings import Settings
from workers.aws import NO_CREDENTIALS, UNREACHABLE, aws_answer, worth_retrying

from .base import JSON, ObjectFacts, checksum, unquote_etag
from .errors import AccessDenied, Missing, StorageError, StorageRefused, StorageUnavailable
from .locations import ObjectLocation, bucket_location, plain_entry

log = logging.getLogger(__name__)

# Strongest first: S3 returns the checksum the object was uploaded with, if any.
_CHECKSUMS = (
    ("ChecksumSHA256", "sha256"),
    ("ChecksumSHA1", "sha1"),
    ("ChecksumCRC64NVME", "crc64nvme"),
    ("ChecksumCRC32C", "crc32c"),
    ("ChecksumCRC32", "crc32"),
)
_SDK_ERRORS = (ClientError, BotoCoreError)
# S3's bucket naming rules, so a typo fails here with a reason rather than at the SDK.
_S3_BUCKET = re.compile(
    r"^(?!xn--)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
)
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}


class S3Verifier:
    """``s3://<bucket>/<key>`` (and the older ``bucket_name`` + ``s3_key``, which the
    recording's handler writes in that form); ``s3:<bucket>`` in RECORDING_LOCATIONS."""

    provider: ClassVar[str] = "s3"
    schemes: ClassVar[tuple[str, ...]] = ("s3",)
    entry = staticmethod(plain_entry)

    @classmethod
    def parse(cls, uri: str, settings: Settings) -> ObjectLocation:
        return bucket_location(uri, cls.provider, "s3", service="S3", valid=_S3_BUCKET.match)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Verifier:
        return cls(settings.storage_timeout_seconds)

    def __init__(self, timeout: float) -> None:
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1},  # one try per task attempt; the task backs off
            user_agent_extra="tavus-callbacks",
        )
        self._client = boto3.session.Session().client("s3", config=config)

    def stat(self, where: ObjectLocation) -> ObjectFacts:
        try:
            head = self._client.head_object(
                Bucket=where.container, Key=where.key, ChecksumMode="ENABLED"
            )
        except _SDK_ERRORS as exc:
            failure = _failure(exc)
            if isinstance(failure, Missing):
                self._check_bucket(where.container)
            raise failure from exc
        return ObjectFacts(
            size=int(head.get("ContentLength") or 0),
            etag=unquote_etag(head.get("ETag")),
            checksum=next(
                (checksum(name, head[field]) for field, name in _CHECKSUMS if head.get(field)),
                None,
            ),
            content_type=head.get("ContentType"),
            last_modified=head.get("LastModified"),
            version=head.get("VersionId"),
        )

    def put(self, where: ObjectLocation, data: bytes, metadata: Mapping[str, str]) -> None:
        try:
            self._client.put_object(
                Bucket=where.container,
                Key=where.key,
                Body=data,
                ContentType=JSON,
                Metadata=dict(metadata),
            )
        except _SDK_ERRORS as exc:
            raise _failure(exc) from exc

    def _check_bucket(self, bucket: str) -> None:
        """A HEAD answers 404 for a missing key and a missing bucket alike; tell them apart."""
        try:
            self._client.head_bucket(Bucket=bucket)
        except _SDK_ERRORS as exc:
            failure = _failure(exc)
            if isinstance(failure, Missing):
                raise StorageRefused(f"S3 bucket {bucket!r} does not exist") from exc
            # Denied or unreachable: we cannot tell, so the object is what is missing.
            log.debug("head_bucket %s: %s", bucket, failure.reason)


def _failure(exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        status, code = aws_answer(exc)
        said = f"S3 answered {status}" + ("" if code == str(status) else f" {code}")
        if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
            return Missing(f"{said}: no such object")
        if status == 403 or code in _DENIED:
            # Without s3:ListBucket, S3 also answers 403 for a key that does not exist.
            return AccessDenied(f"{said}: access denied")
        if worth_retrying(status, code):
            return StorageUnavailable(f"{said}: try again")
        if status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
            return StorageRefused(f"{said}: the bucket is in another region than configured")
        return StorageRefused(
            f"{said}: {exc.response.get('Error', {}).get('Message', '')}".rstrip()
        )
    if isinstance(exc, NO_CREDENTIALS):
        return StorageRefused(f"no usable AWS credentials: {exc}")
    if isinstance(exc, SSLError):
        return StorageRefused(f"TLS failure talking to S3: {exc}")
    if isinstance(exc, UNREACHABLE):
        return StorageUnavailable(f"S3 unreachable: {exc}")
    return StorageRefused(f"S3 request failed: {exc}")
