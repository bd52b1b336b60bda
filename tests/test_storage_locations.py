"""Locating a recording: strict parsing of every accepted form, a reason for everything refused,
and the RECORDING_LOCATIONS allowlist. No network."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.settings import Settings, SettingsError
from workers.storage import verifiers
from workers.storage.locations import Allowlist, LocationRefused, ObjectLocation, redact

EMULATOR = "http://127.0.0.1:10000/devstoreaccount1"
WITH_EMULATOR = Settings(
    azure_storage_connection_string=f"AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint={EMULATOR};"
)
RULES = {name: cls.entry for name, cls in verifiers.PROVIDERS.items()}


def locate(provider: str | None, uri: str | None, settings: Settings = WITH_EMULATOR):
    return verifiers.locate(provider, uri, settings)


@pytest.mark.parametrize(
    ("provider", "uri", "expected"),
    [
        ("s3", "s3://my-tavus-recordings/recordings/c1.mp4",
         ObjectLocation("s3", "my-tavus-recordings", "recordings/c1.mp4")),
        (None, "s3://b.with.dots/a/b/c.mp4", ObjectLocation("s3", "b.with.dots", "a/b/c.mp4")),
        ("gcs", "gs://my-gcs-recordings/recordings/c1.mp4",
         ObjectLocation("gcs", "my-gcs-recordings", "recordings/c1.mp4")),
        ("azure_blob", "https://myaccount.blob.core.windows.net/recordings/c1.mp4",
         ObjectLocation("azure_blob", "recordings", "c1.mp4", account="myaccount")),
        ("azure_blob", "https://MyAccount.blob.core.windows.net/recordings/dir/a%20b.mp4",
         ObjectLocation("azure_blob", "recordings", "dir/a b.mp4", account="myaccount")),
        ("AZURE_BLOB", "http://127.0.0.1:10000/devstoreaccount1/recordings/c1.mp4",
         ObjectLocation("azure_blob", "recordings", "c1.mp4", account="devstoreaccount1",
                        endpoint="http://127.0.0.1:10000")),
    ],
)  # fmt: skip
def test_accepted_forms(provider: str | None, uri: str, expected: ObjectLocation) -> None:
    assert locate(provider, uri) == expected


def test_each_location_has_its_canonical_uri() -> None:
    assert locate(None, "s3://bkt/k.mp4").uri == "s3://bkt/k.mp4"
    assert locate(None, "GS://bkt/k.mp4").uri == "gs://bkt/k.mp4"
    azure = locate(None, "https://MyAccount.blob.core.windows.net/recordings/a%20b.mp4")
    assert azure.uri == "https://myaccount.blob.core.windows.net/recordings/a b.mp4"
    assert locate(None, f"{EMULATOR}/rec/k").uri == f"{EMULATOR}/rec/k"


@pytest.mark.parametrize(
    ("provider", "uri", "reason"),
    [
        ("s3", "https://my-bucket.s3.amazonaws.com/key.mp4", "not an Azure Blob endpoint"),
        ("s3", "s3://my-bucket", "without an object key"),
        ("s3", "s3://my-bucket/", "empty object key"),
        ("s3", "s3://My_Bucket/key", "not a valid S3 bucket name"),
        ("s3", "s3://192.168.1.10/key", "not a valid S3 bucket name"),
        ("s3", "s3://bucket/ke\ny", "control characters"),
        ("s3", "s3://bucket/" + "k" * 1025, "longer than 1024 bytes"),
        ("gcs", "gs://goog-bucket/key", "not a valid GCS bucket name"),
        ("gcs", "gs://bucket/..", "are not GCS object names"),
        ("gcs", "s3://bucket/key", "does not match"),
        ("dropbox", "s3://bucket/key", "unknown storage_provider"),
        (None, "ftp://bucket/key", "unsupported scheme"),
        (None, "bucket/key.mp4", "not a URI"),
        (None, "", "no storage_uri"),
        ("azure_blob", "https://evil.example.com/acct/c/blob", "not an Azure Blob endpoint"),
        ("azure_blob", "https://acct.blob.core.windows.net.evil.com/c/b", "not an Azure Blob"),
        ("azure_blob", "https://acct.blob.core.windows.net:8443/c/b", "not an Azure Blob"),
        ("azure_blob", "http://acct.blob.core.windows.net/c/b", "not an Azure Blob endpoint"),
        ("azure_blob", "https://acct.blob.core.windows.net/c1/b?sv=2024&sig=SECRET", "query"),
        ("azure_blob", "https://u:p@acct.blob.core.windows.net/c1/b", "credentials"),
        ("azure_blob", "https://acct.blob.core.windows.net/container", "no container and blob"),
        ("azure_blob", "https://acct.blob.core.windows.net/Bad--Name/b", "valid Azure container"),
        ("azure_blob", "https://a.blob.core.windows.net/cont/b", "valid Azure storage account"),
        # The emulator form only on the configured emulator's scheme, host and port.
        ("azure_blob", "http://127.0.0.1:10001/devstoreaccount1/c1/b", "not an Azure Blob"),
        ("azure_blob", "http://169.254.169.254:10000/devstoreaccount1/c1/b", "not an Azure"),
        ("azure_blob", "https://127.0.0.1:10000/devstoreaccount1/c1/b", "not an Azure Blob"),
    ],
)  # fmt: skip
def test_refused_with_a_reason(provider: str | None, uri: str, reason: str) -> None:
    with pytest.raises(LocationRefused, match=reason) as refused:
        locate(provider, uri)
    assert "SECRET" not in refused.value.reason  # a SAS signature never reaches a reason


def test_emulator_form_needs_a_configured_emulator() -> None:
    uri = "http://127.0.0.1:10000/devstoreaccount1/recordings/c1.mp4"
    with pytest.raises(LocationRefused, match="not an Azure Blob endpoint"):
        locate("azure_blob", uri, Settings())


@given(st.text(max_size=300), st.sampled_from([None, "s3", "gcs", "azure_blob", "x"]))
def test_any_input_is_located_or_refused_never_crashes(uri: str, provider: str | None) -> None:
    try:
        where = locate(provider, uri)
    except LocationRefused as refused:
        assert refused.reason
    else:
        assert where.provider in ("s3", "gcs", "azure_blob") and where.key


def test_allowlist_admits_only_listed_buckets_and_containers() -> None:
    allowed = Allowlist.parse(
        ["s3:my-bucket", "gcs:other-bucket", "azure_blob:Account/container"], RULES
    )
    allowed.check(ObjectLocation("s3", "my-bucket", "k"))
    allowed.check(ObjectLocation("gcs", "other-bucket", "k"))
    allowed.check(ObjectLocation("azure_blob", "container", "k", account="account"))
    refusals = [
        ObjectLocation("s3", "other-bucket", "k"),  # listed, but for another provider
        ObjectLocation("gcs", "my-bucket", "k"),
        ObjectLocation("azure_blob", "other", "k", account="account"),
        ObjectLocation("azure_blob", "container", "k", account="attacker"),
    ]
    for where in refusals:
        with pytest.raises(LocationRefused, match="not listed in RECORDING_LOCATIONS"):
            allowed.check(where)
    assert not Allowlist.parse([], RULES)


def test_recording_locations_setting_fails_at_boot_when_malformed() -> None:
    settings = Settings.from_env({"RECORDING_LOCATIONS": "s3:a-bucket, azure_blob:acct/cont"})
    assert settings.recording_locations == ("s3:a-bucket", "azure_blob:acct/cont")
    verifiers.check(settings)
    for bad in ("s3", "s3:a b", "S3:bucket"):  # no provider would take these
        with pytest.raises(SettingsError, match="RECORDING_LOCATIONS"):
            Settings.from_env({"RECORDING_LOCATIONS": bad})
    # Each provider's own form, checked where the providers are (the worker's start).
    for bad in ("s3:bucket/prefix", "azure_blob:acct", "dropbox:x", "gs:bucket"):
        with pytest.raises(SettingsError, match="RECORDING_LOCATIONS"):
            verifiers.check(Settings.from_env({"RECORDING_LOCATIONS": bad}))


def test_connection_string_stays_out_of_settings_repr() -> None:
    settings = Settings.from_env({"AZURE_STORAGE_CONNECTION_STRING": "AccountKey=s3cr3t"})
    assert settings.azure_storage_connection_string == "AccountKey=s3cr3t"
    assert "s3cr3t" not in repr(settings)


def test_redact_drops_query_and_credentials_of_urls_only() -> None:
    assert redact("https://u:p@a.blob.core.windows.net/c/b?sig=x#f") == (
        "https://a.blob.core.windows.net/c/b"
    )
    assert redact("s3://bucket/what?.mp4") == "s3://bucket/what?.mp4"
