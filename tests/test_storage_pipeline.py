"""Recording verification end to end: a recording_ready is posted to the real receiver, a real
Celery worker (events and storage queues only) verifies the object in moto, the GCS emulator or
Azurite, and the result lands on the conversation's recording. Alerts are another worker's job:
here they are read, still waiting, from the ``alerts`` queue in Redis.

Every case runs for the three providers at once. Windows are short (RECORDING_WAIT_SECONDS=8).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from cli.main import main
from cli.simulate import conversation_event
from receiver import create_app
from schemas.messages import RAISE_ALERT, STORAGE_QUEUE, VERIFY_RECORDING
from schemas.settings import Settings
from tests.helpers import TOKEN, worker_env
from tests.services import ROOT, RedisServer, Worker, base_env, free_port, wait_until
from tests.storage_fixtures import BUCKET, PROVIDERS, UNLISTED_BUCKET
from tests.storage_services import LOCKED_ACCOUNT, LOCKED_BUCKET, Emulators
from workers import queries
from workers.storage.state import FINAL
from workers.store.db import Store

pytestmark = pytest.mark.integration

WINDOW = 8  # RECORDING_WAIT_SECONDS in these tests
LOCATIONS = (
    f"s3:{BUCKET}, s3:{LOCKED_BUCKET}, gcs:{BUCKET}, gcs:{LOCKED_BUCKET}, "
    f"azure_blob:devstoreaccount1/{BUCKET}, azure_blob:{LOCKED_ACCOUNT}/{BUCKET}"
)
MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


@dataclass
class Pipeline:
    redis_url: str
    client: object
    store: Store
    redis: redis.Redis
    worker: Worker
    emulators: Emulators

    def post(self, conversation_id: str, properties: dict, at: datetime | None = None) -> None:
        at = at or datetime.now(UTC)
        body = conversation_event(conversation_id, "application.recording_ready", at, properties)
        response = self.client.post(f"/callbacks/{TOKEN}", json=body)
        assert response.status_code == 202, response.json

    def post_uri(self, conversation_id: str, provider: str, uri: str, **kw) -> None:
        self.post(conversation_id, {"storage_provider": provider, "storage_uri": uri}, **kw)

    def recording(self, conversation_id: str) -> dict | None:
        with self.store.session() as session:
            record = queries.conversation_record(session, conversation_id)
        return record and record["recording"]

    def events(self, conversation_id: str) -> list[str]:
        with self.store.session() as session:
            record = queries.conversation_record(session, conversation_id)
        return [event["status"] for event in record["events"]]

    def verification(self, conversation_id: str) -> dict:
        return (self.recording(conversation_id) or {}).get("verification") or {}

    def final(self, conversation_id: str, timeout: float = WINDOW + 15) -> dict:
        def done() -> dict | None:
            found = self.verification(conversation_id)
            return found if found.get("status") in FINAL else None

        return wait_until(done, timeout=timeout, interval=0.2)

    def alerts(self, conversation_id: str) -> list[dict]:
        """RAISE_ALERT messages waiting in the alerts queue for this conversation."""
        found = []
        for raw in self.redis.lrange("alerts", 0, -1):
            envelope = json.loads(raw)
            assert envelope["headers"]["task"] == RAISE_ALERT
            body = envelope["body"]  # the workers' lean message carries it as is; Celery's, base64
            if envelope["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, _kwargs, _embed = json.loads(body)
            if args[0]["conversation_id"] == conversation_id:
                found.append(args[0])
        return found


def cid(label: str) -> str:
    return f"c-{label}-{uuid.uuid4().hex[:8]}"


def key() -> str:
    return f"recordings/{uuid.uuid4().hex}.mp4"


def start_pipeline(
    redis_server: RedisServer, db: int, database_url: str, log: Path, emulators: Emulators, **env
) -> Pipeline:
    redis_url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = Store(database_url)
    store.upgrade()
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=database_url)
    variables = {
        **emulators.worker_env(),
        "RECORDING_LOCATIONS": LOCATIONS,
        "RECORDING_WAIT_SECONDS": str(WINDOW),
        "STORAGE_RETRY_BASE_SECONDS": "0.5",
        "STORAGE_TIMEOUT_SECONDS": "2",
        **env,
    }
    worker = Worker(worker_env(settings, **variables), log, concurrency=3, queues="events,storage")
    worker.start()
    return Pipeline(redis_url, create_app(settings).test_client(), store, client, worker, emulators)


def stop_pipeline(pipeline: Pipeline) -> None:
    pipeline.worker.stop()
    pipeline.redis.close()
    pipeline.store.dispose()


@pytest.fixture(scope="module")
def pipeline(redis_server, emulators, tmp_path_factory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("storage-pipeline")
    running = start_pipeline(
        redis_server, 3, f"sqlite:///{tmp / 'events.db'}", tmp / "worker.log", emulators
    )
    yield running
    stop_pipeline(running)


def test_present_recordings_end_verified_with_their_size(pipeline: Pipeline) -> None:
    ids = {}
    for provider in PROVIDERS:
        ids[provider] = cid(provider)
        path = key()
        pipeline.emulators.upload(provider, BUCKET, path, MP4)
        pipeline.post_uri(ids[provider], provider, pipeline.emulators.uri(provider, BUCKET, path))
    legacy_key = key()  # the older S3 payload: bucket_name + s3_key, no URI
    pipeline.emulators.upload("s3", BUCKET, legacy_key, MP4)
    ids["legacy"] = cid("legacy")
    pipeline.post(ids["legacy"], {"bucket_name": BUCKET, "s3_key": legacy_key, "duration": 14})

    for label, conversation_id in ids.items():
        found = pipeline.final(conversation_id)
        assert (found["status"], found["size"], found["attempts"]) == ("verified", len(MP4), 1), (
            label
        )
        assert found["content_type"] == "video/mp4" and found["etag"], label
        assert found["checksum"] and found["last_modified"], label
        assert pipeline.alerts(conversation_id) == []

        # What a user runs: the CLI shows the verified recording and its size.
        command = ["conversation", conversation_id, "--json"]
        shown = CliRunner().invoke(main, command, env={"DATABASE_URL": pipeline.store.url})
        assert shown.exit_code == 0, shown.output
        verification = json.loads(shown.output)["recording"]["verification"]
        assert (verification["status"], verification["size"]) == ("verified", len(MP4))


def test_missing_then_uploaded_within_the_window_is_verified(pipeline: Pipeline) -> None:
    paths = {provider: (cid(provider), key()) for provider in PROVIDERS}
    for provider, (conversation_id, path) in paths.items():
        pipeline.post_uri(conversation_id, provider, pipeline.emulators.uri(provider, BUCKET, path))
    for provider, (conversation_id, path) in paths.items():
        first = wait_until(lambda c=conversation_id: pipeline.verification(c).get("checked_at"), 10)
        assert first and pipeline.verification(conversation_id)["status"] == "pending"
        pipeline.emulators.upload(provider, BUCKET, path, MP4)  # Tavus's copy lands late
    for provider, (conversation_id, _) in paths.items():
        found = pipeline.final(conversation_id)
        assert found["status"] == "verified", (provider, found)
        assert found["attempts"] >= 2 and found["size"] == len(MP4), (provider, found)
        assert pipeline.alerts(conversation_id) == []


def test_missing_for_good_ends_missing_with_one_alert(pipeline: Pipeline) -> None:
    ready_at = datetime.now(UTC).replace(microsecond=0)
    ids = {provider: cid(provider) for provider in PROVIDERS}
    started = time.monotonic()
    for provider, conversation_id in ids.items():
        uri = pipeline.emulators.uri(provider, BUCKET, key())
        pipeline.post_uri(conversation_id, provider, uri, at=ready_at)
    for provider, conversation_id in ids.items():
        found = pipeline.final(conversation_id)
        assert found["status"] == "missing", (provider, found)
        assert found["attempts"] >= 3, (provider, found)  # retried with backoff...
        assert found["elapsed_seconds"] <= WINDOW + 3, (provider, found)  # ...within the window
        assert "gave up" in found["reason"]
    assert time.monotonic() - started < WINDOW + 10
    deadline = ready_at + timedelta(days=30)
    for provider, conversation_id in ids.items():
        alerts = wait_until(lambda c=conversation_id: pipeline.alerts(c), 5)
        assert len(alerts) == 1, (provider, alerts)
        alert = alerts[0]
        assert alert["cause_key"] == f"recording_unverified:{conversation_id}"
        assert alert["severity"] == "critical"
        assert alert["facts"]["provider"] == provider
        assert alert["facts"]["recovery_deadline"] == deadline.isoformat()
        assert f"before {deadline:%Y-%m-%d %H:%M} UTC" in alert["text"]
        assert "recording_copy_failed" in alert["text"]  # the likely cause, named
        assert alert["event_id"]


def test_unreadable_recordings_alert_without_retry(pipeline: Pipeline) -> None:
    ids = {}
    for provider in PROVIDERS:
        path, ids[provider] = key(), cid(provider)
        if provider == "azure_blob":  # an account whose key the worker does not hold
            pipeline.emulators.upload(provider, BUCKET, path, MP4, account=LOCKED_ACCOUNT)
            uri = pipeline.emulators.uri(provider, BUCKET, path, account=LOCKED_ACCOUNT)
        else:  # an IAM deny (moto) / a 403 from GCS (the proxy)
            pipeline.emulators.upload(provider, LOCKED_BUCKET, path, MP4)
            uri = pipeline.emulators.uri(provider, LOCKED_BUCKET, path)
        pipeline.post_uri(ids[provider], provider, uri)
    for provider, conversation_id in ids.items():
        found = pipeline.final(conversation_id, timeout=15)
        assert (found["status"], found["attempts"]) == ("access_denied", 1), (provider, found)
        assert "403" in found["reason"]
        alerts = wait_until(lambda c=conversation_id: pipeline.alerts(c), 5)
        assert [a["severity"] for a in alerts] == ["error"]
        assert "read access" in alerts[0]["text"]
    time.sleep(2)  # long enough for the first retry, had there been one
    assert [pipeline.verification(c)["attempts"] for c in ids.values()] == [1, 1, 1]


def test_refused_locations_are_never_contacted(pipeline: Pipeline) -> None:
    emulators = pipeline.emulators
    unlisted_key = key()  # present, readable, but in buckets nobody listed
    for provider in PROVIDERS:
        emulators.upload(provider, UNLISTED_BUCKET, unlisted_key, MP4)
    other_port = f"http://127.0.0.1:{free_port()}"
    path = f"{BUCKET}/{unlisted_key}"
    unlisted = {p: emulators.uri(p, UNLISTED_BUCKET, unlisted_key) for p in PROVIDERS}
    refused = {
        cid("s3-unlisted"): ("s3", unlisted["s3"]),
        cid("gcs-unlisted"): ("gcs", unlisted["gcs"]),
        cid("az-unlisted"): ("azure_blob", unlisted["azure_blob"]),
        cid("s3-malformed"): ("s3", f"s3://Not_A_Bucket/{unlisted_key}"),
        cid("gcs-malformed"): ("gcs", f"gs://{BUCKET}"),
        cid("az-foreign-host"): ("azure_blob", f"https://evil.example.com/x/{path}"),
        cid("az-other-port"): ("azure_blob", f"{other_port}/devstoreaccount1/{path}"),
        cid("mismatch"): ("gcs", f"s3://{path}"),
    }  # fmt: skip
    for conversation_id, (provider, uri) in refused.items():
        pipeline.post_uri(conversation_id, provider, uri)
    listed = {}  # beside them, one listed recording per provider: the stand-ins' logs work
    for provider in PROVIDERS:
        listed[provider] = cid(f"{provider}-listed")
        emulators.upload(provider, BUCKET, unlisted_key, MP4)
        pipeline.post_uri(listed[provider], provider, emulators.uri(provider, BUCKET, unlisted_key))
    for provider, conversation_id in listed.items():
        assert pipeline.final(conversation_id)["status"] == "verified", provider
    for conversation_id, (_, uri) in refused.items():
        found = pipeline.final(conversation_id, timeout=15)
        assert (found["status"], found["attempts"]) == ("refused", 1), (uri, found)
        assert found["reason"] and found["last_call_seconds"] is None, (uri, found)
        alerts = wait_until(lambda c=conversation_id: pipeline.alerts(c), 5)
        assert len(alerts) == 1 and "RECORDING_LOCATIONS" in alerts[0]["text"], (uri, alerts)
    first = pipeline.verification(next(iter(refused)))
    assert first["reason"] == f"s3:{UNLISTED_BUCKET} is not listed in RECORDING_LOCATIONS"
    # No stand-in was ever asked about them (the test's own uploads are PUTs), while the same
    # logs do show the worker's reads of the listed recordings.
    assert emulators.reads(UNLISTED_BUCKET) == {"s3": [], "gcs": [], "azure_blob": []}
    assert all(emulators.reads(BUCKET).values())


def test_redelivery_changes_nothing_and_a_newer_recording_ready_starts_over(
    pipeline: Pipeline,
) -> None:
    conversation_id, first, second = cid("again"), key(), key()
    pipeline.emulators.upload("s3", BUCKET, first, MP4)
    at = datetime.now(UTC) - timedelta(minutes=5)
    pipeline.post_uri(conversation_id, "s3", f"s3://{BUCKET}/{first}", at=at)
    verified = pipeline.final(conversation_id)
    assert verified["status"] == "verified"

    # Celery redelivers the same task (acks_late): nothing is checked or changed again.
    sender = Celery(broker=pipeline.redis_url)
    task_id = uuid.uuid4().hex
    sender.send_task(
        VERIFY_RECORDING, args=[conversation_id, 1], queue=STORAGE_QUEUE, task_id=task_id
    )
    log = pipeline.worker.log_path
    wait_until(lambda: f"[{task_id}] succeeded" in log.read_text(), 15)
    assert pipeline.verification(conversation_id) == verified

    # An older announcement arriving late changes nothing either.
    older = at - timedelta(minutes=1)
    pipeline.post_uri(conversation_id, "s3", f"s3://{BUCKET}/older.mp4", at=older)
    wait_until(lambda: pipeline.events(conversation_id) == ["processed", "processed"], 10)
    assert pipeline.recording(conversation_id)["uri"] == f"s3://{BUCKET}/{first}"
    assert pipeline.verification(conversation_id) == verified

    # A newer recording_ready (another object) starts a new round, verified on its own.
    newer = at + timedelta(minutes=1)
    pipeline.post_uri(conversation_id, "s3", f"s3://{BUCKET}/{second}", at=newer)
    wait_until(lambda: pipeline.verification(conversation_id)["status"] == "pending", 10)
    pipeline.emulators.upload("s3", BUCKET, second, MP4[:1000])
    again = pipeline.final(conversation_id)
    assert (again["status"], again["size"]) == ("verified", 1000)
    assert again["etag"] != verified["etag"]
    sender.close()

    # After a fix (here: the object was replaced), an operator checks again from scratch.
    pipeline.emulators.upload("s3", BUCKET, second, MP4[:500])
    env = base_env(REDIS_URL=pipeline.redis_url, DATABASE_URL=pipeline.store.url)
    command = [sys.executable, "-m", "cli.main", "verify-recording", conversation_id]
    ran = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "round 3" in ran.stdout, ran.stderr
    rechecked = wait_until(lambda: pipeline.verification(conversation_id).get("size") == 500, 15)
    found = pipeline.verification(conversation_id)
    assert rechecked and (found["status"], found["attempts"]) == ("verified", 1)


def test_endpoints_down_fail_fast_are_retried_then_alert(redis_server, emulators, tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = start_pipeline(
        redis_server, 4, f"sqlite:///{tmp_path / 'events.db'}", tmp_path / "worker.log", emulators,
        AWS_ENDPOINT_URL_S3=dead,
        STORAGE_EMULATOR_HOST=dead,
        AZURE_STORAGE_CONNECTION_STRING=emulators.azurite.connection_string().replace(
            emulators.azurite.url, dead
        ),
    )  # fmt: skip
    try:
        ids = {provider: cid(provider) for provider in PROVIDERS}
        for provider, conversation_id in ids.items():
            uri = emulators.uri(provider, BUCKET, key()).replace(emulators.azurite.url, dead)
            down.post_uri(conversation_id, provider, uri)
        for provider, conversation_id in ids.items():
            found = down.final(conversation_id)
            assert found["status"] == "error", (provider, found)
            assert "unreachable" in found["reason"] and "gave up" in found["reason"]
            assert found["attempts"] >= 3, (provider, found)  # retried with backoff
            assert found["last_call_seconds"] < 2, (provider, found)  # seconds, not minutes
            assert len(wait_until(lambda c=conversation_id: down.alerts(c), 5)) == 1
    finally:
        stop_pipeline(down)


def test_verified_on_postgres_too(redis_server, emulators, postgres_url, tmp_path) -> None:
    on_postgres = start_pipeline(redis_server, 5, postgres_url, tmp_path / "worker.log", emulators)
    try:
        ids = {provider: cid(provider) for provider in PROVIDERS}
        for provider, conversation_id in ids.items():
            path = key()
            emulators.upload(provider, BUCKET, path, MP4)
            on_postgres.post_uri(conversation_id, provider, emulators.uri(provider, BUCKET, path))
        for provider, conversation_id in ids.items():
            found = on_postgres.final(conversation_id)
            assert (found["status"], found["size"]) == ("verified", len(MP4)), provider
    finally:
        stop_pipeline(on_postgres)
