"""Forwarding to message buses, streams and buckets (``FORWARD_<NAME>_URL`` by scheme) against the
real systems, read back with each system's own client: every event once per destination, with
our event id as its idempotency key, every attempt in the ledger, a bad URL refused at start by
its variable and never by its credentials."""

from __future__ import annotations

import base64
import itertools
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import amqp
import orjson
import pytest
import redis
from alembic import command
from alembic.config import Config
from marshmallow import fields as marshmallow_fields
from sqlalchemy import select, text

from cli.simulate import conversation_lifecycle
from console.app import create_app
from schemas import reference
from schemas.settings import (
    DestinationSettings,
    ForwardDestination,
    Settings,
    SettingsError,
    per_destination,
)
from tests.console_fixtures import BEARER, add_event, console_settings, sign_in
from tests.helpers import TOKEN, deliver_all, stored_event, worker_env
from tests.services import ROOT, RedisServer, Worker, wait_until
from tests.sinks import HttpSink, verified
from tests.storage_fixtures import BUCKET, PROVIDERS
from workers import destinations, forwarding, queries
from workers.destinations import Answer, ForwardedEvent, UrlDestination
from workers.storage.verifiers import verifier_for
from workers.store.db import MIGRATIONS, Store
from workers.store.models import Event

PASSWORD = "pa55-w0rd-never-shown"  # in destination URLs: never in an error, a row or a log


def settings_with(store: Store, name: str, url: str, **variables: str) -> Settings:
    destination = ForwardDestination(name, url, ("*",), variables)
    return Settings(
        database_url=store.url, forward_destinations=(destination,), forward_timeout_seconds=2.0
    )


def lifecycle(store: Store, conversation_id: str) -> list[tuple[str, dict]]:
    """A whole simulated conversation, processed as the worker does: (event id, message) each."""
    return [stored_event(store, body) for body in conversation_lifecycle(conversation_id)]


def rows(store: Store, destination: str | None) -> list[dict]:
    with store.session() as session:
        return queries.list_deliveries(session, destination=destination, limit=1000)


def first_attempt(store: Store, settings: Settings, name: str) -> tuple[str, dict]:
    """One new event attempted at destination ``name``: the outcome, and the delivery's row."""
    body = next(iter(conversation_lifecycle(f"c-{uuid.uuid4().hex[:8]}")))
    event_id, message = stored_event(store, body)
    [outcome] = deliver_all(store, settings, event_id, message)
    [row] = rows(store, name)
    return outcome.status, row


def refusal(settings: Settings) -> str:
    with pytest.raises(SettingsError) as refused:
        destinations.check(settings)
    return str(refused.value)


# --- a bad URL, for every type ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("rediss://:{password}@redis.example.com:6380/0?maxlen=5", "name the stream"),
        ("redis://:{password}@redis.example.com/0?stream=t&maxlen=lots", "maxlen must be a whole"),
        ("redis://:{password}@redis.example.com/0?stream=t&maxln=5", "option(s) ['maxln']"),
        ("amqps://guest:{password}@mq.example.com/?exchange=", "names no exchange"),
        ("amqp://guest:{password}@mq.example.com/?queue=x", "option(s) ['queue']"),
        ("azure_blob://account", "name the container"),
        ("s3://bucket/prefix?region=eu-west-1", "option(s) ['region']"),
        ("sqs://a/b/c", "name the queue"),
        ("sqs://q?region=eu-west-1&fifo=1", "option(s) ['fifo']"),
        ("kafka://broker.example.com/topic", "no destination type for kafka://"),
    ],
)
def test_a_bad_url_stops_the_worker_naming_its_variable_not_its_password(store, url, why):
    refused = refusal(settings_with(store, "out", url.format(password=PASSWORD)))
    assert "FORWARD_OUT_URL" in refused and why in refused
    assert PASSWORD not in refused and "example.com" not in refused


# --- the delivery's type, recorded ----------------------------------------------------------


def test_migration_0008_gives_the_deliveries_before_it_their_type(tmp_path):
    """Before 0008 only webhooks and hooks existed, told apart by the hooks' "hook:" names."""
    store = Store(f"sqlite:///{tmp_path / 'before.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = store.engine
    command.upgrade(config, "0007")  # the revision before 0008
    event_id = add_event(store, datetime.now(UTC), conversation_id="c-0008")
    with store.begin() as connection:
        for name in ("app", "hook:myapp.hooks.notify"):
            connection.execute(
                text(
                    "INSERT INTO forward_deliveries (event_id, destination, source, status, "
                    "attempts) VALUES (:event_id, :name, 'callback', 'delivered', 1)"
                ),
                {"event_id": event_id, "name": name},
            )
    store.upgrade()
    assert {(r["destination"], r["type"]) for r in rows(store, None)} == {
        ("app", "webhook"),
        ("hook:myapp.hooks.notify", "hook"),
    }
    store.dispose()


def test_settings_with_destinations_stay_a_cache_key():
    """The storage clients are cached per Settings: a webhook's FORWARD_<NAME>_SECRET must not
    make recording verification (or an archive destination) raise TypeError: unhashable."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    env = {"FORWARD_APP_URL": "https://app.example.com/hook", "FORWARD_APP_SECRET": secret}
    settings = Settings.from_env(env)
    assert verifier_for("s3", settings) is verifier_for("s3", Settings.from_env(env))


# --- redis://host/db?stream=<name>&maxlen=<n> ------------------------------------------------


@pytest.fixture
def stream_redis(tmp_path):
    server = RedisServer(tmp_path / "stream-redis").start()
    yield server
    server.stop()


def test_a_redis_stream_gets_each_event_once_with_its_id_and_exact_body(store, stream_redis):
    settings = settings_with(store, "bus", f"{stream_redis.url}?stream=tavus&maxlen=1000")
    events = lifecycle(store, "c-stream")
    for event_id, message in events:
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]
        # A repeat of the event (a Celery redelivery, Tavus's resend) adds nothing.
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]

    reader = redis.Redis.from_url(stream_redis.url)
    entries = reader.xrange("tavus")
    assert [fields[b"id"].decode() for _, fields in entries] == [e for e, _ in events]
    for (_entry, fields), (_event_id, message) in zip(entries, events, strict=True):
        assert fields[b"body"].decode() == message["body"]  # byte for byte as Tavus sent it
        assert fields[b"kind"].decode() == message["kind"]
        assert fields[b"type"].decode() == (message["event_type"] or "")
        assert fields[b"source"] == b"callback"
    listed = rows(store, "bus")
    assert {(r["type"], r["status"], r["attempts"]) for r in listed} == {
        ("redis_stream", "delivered", 1)
    }
    assert {r["history"][0]["answer"] for r in listed} == {e.decode() for e, _ in entries}

    # redeliver sends again, through the task its recorded type names, with the same id.
    with store.session() as session:
        [task] = forwarding.redeliver(session, settings, events[0][0], "bus")
    assert task["name"] == "tavus.forward.deliver"
    forwarding.deliver(store, *task["args"], settings)
    assert reader.xrange("tavus")[-1][1][b"id"].decode() == events[0][0]
    assert reader.xlen("tavus") == len(events) + 1


def test_a_redis_stream_that_is_down_is_retried_then_gets_the_event(store, stream_redis):
    settings = settings_with(store, "bus", f"{stream_redis.url}?stream=tavus")
    event_id, message = stored_event(store, next(iter(conversation_lifecycle("c-down"))))
    stream_redis.stop()
    [outcome] = deliver_all(store, settings, event_id, message)
    assert outcome.status == "retrying" and outcome.retry_in > 0
    [row] = rows(store, "bus")
    assert row["last_error"] == "127.0.0.1 unavailable: ConnectionError"
    stream_redis.start()
    [outcome] = deliver_all(store, settings, event_id, message)
    assert outcome.status == "delivered"
    assert redis.Redis.from_url(stream_redis.url).xlen("tavus") == 1


def test_a_wrong_redis_password_fails_at_once_and_is_never_written(store, stream_redis):
    reader = redis.Redis.from_url(stream_redis.url)
    reader.config_set("requirepass", "the-right-one")
    url = stream_redis.url.replace("redis://", f"redis://:{PASSWORD}@")
    settings = settings_with(store, "bus", f"{url}?stream=tavus")
    status, row = first_attempt(store, settings, "bus")
    assert status == "failed"
    assert row["last_error"] == "127.0.0.1 refused the credentials"
    assert PASSWORD not in str(row)


def test_a_rate_limited_destination_never_exceeds_its_rate_and_loses_nothing(
    store, stream_redis, redis_url
):
    """Four "workers" (threads) deliver at once to a stream limited to 5/s, retrying when told
    to wait, as the task does; the stream's own entry ids are its arrival times."""
    settings = settings_with(store, "bus", f"{stream_redis.url}?stream=tavus").with_overrides(
        redis_url=redis_url
    )
    env = {"FORWARD_BUS_URL": settings.forward_destinations[0].url, "FORWARD_BUS_RATE": "5/s"}
    settings = settings.with_overrides(
        forward_destinations=Settings.from_env(env).forward_destinations
    )
    assert settings.forward_destinations[0].rate == (5, 1.0)
    for bad in ("5", "5/d", "0/s", "five/s"):
        with pytest.raises(SettingsError, match="FORWARD_BUS_RATE"):
            Settings.from_env({**env, "FORWARD_BUS_RATE": bad})
    events = lifecycle(store, "c-rate")
    held = []

    def deliver_until_done(event_id: str) -> None:
        while (
            outcome := forwarding.deliver(store, event_id, "bus", "callback", settings)
        ).retry_in:
            held.append(outcome.status)
            time.sleep(outcome.retry_in)
        assert outcome.status == "delivered"

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(deliver_until_done, [event_id for event_id, _ in events]))
    arrived = [
        int(entry.split(b"-")[0])
        for entry, _ in redis.Redis.from_url(stream_redis.url).xrange("tavus")
    ]
    assert len(arrived) == len(events) and held and set(held) == {"rate_limited"}
    # The limit spaces the attempts' starts 200 ms apart, whichever process makes them; what
    # arrives is that, give or take how long each attempt took to reach the stream (the claim in
    # the store comes between: on SQLite, with four threads on one file, tens of ms).
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    in_any_second = max(sum(t <= a < t + 950 for a in arrived) for t in arrived)  # 50 ms of that
    assert in_any_second <= 5, gaps
    assert arrived[-1] - arrived[0] >= 200 * (len(arrived) - 1) - 100, gaps
    assert {r["attempts"] for r in rows(store, "bus")} == {1}  # waiting took no attempt


# --- amqp://guest:guest@127.0.0.1:5672/?exchange=<name> -------------------------------------

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


def bound_queue(channel: amqp.Channel, exchange: str, pattern: str) -> str:
    queue, _count, _consumers = channel.queue_declare("", exclusive=True)
    channel.queue_bind(queue, exchange, pattern)
    return queue


def drained(channel: amqp.Channel, queue: str) -> list[amqp.Message]:
    messages = []
    while (message := channel.basic_get(queue, no_ack=True)) is not None:
        messages.append(message)
    return messages


def test_rabbitmq_gets_each_event_once_persistent_on_a_topic_exchange(store, rabbit):
    channel, made = rabbit
    exchange = f"tavus-test-{uuid.uuid4().hex[:8]}"
    made.append(exchange)
    settings = settings_with(store, "rabbit", f"{RABBITMQ}?exchange={exchange}")
    destinations.prepare(settings)  # the worker at start: the exchange exists before events
    every = bound_queue(channel, exchange, "#")
    application = bound_queue(channel, exchange, "application.*")
    events = lifecycle(store, "c-rabbit")
    for event_id, message in events:
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]

    received = drained(channel, every)
    assert [m.properties["message_id"] for m in received] == [e for e, _ in events]
    for got, (event_id, message) in zip(received, events, strict=True):
        assert got.body.decode() == message["body"]  # byte for byte as Tavus sent it
        assert got.properties["delivery_mode"] == 2  # persistent
        assert got.delivery_info["routing_key"] == message["event_type"] or message["kind"]
        assert got.properties["application_headers"] == {
            "tavus-event-kind": message["kind"],
            "tavus-event-type": message["event_type"] or "",
            "tavus-event-source": "callback",
            "tavus-event-id": event_id,
        }
    wanted = [e for e, m in events if (m["event_type"] or "").startswith("application.")]
    assert wanted and [m.properties["message_id"] for m in drained(channel, application)] == wanted
    assert {(r["type"], r["status"]) for r in rows(store, "rabbit")} == {("amqp", "delivered")}
    # Declared durable, as a topic exchange: redeclaring it so passively succeeds.
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False, passive=True)


def test_rabbitmq_refusing_the_credentials_fails_at_once_never_naming_them(store):
    url = f"amqp://guest:{PASSWORD}@127.0.0.1:5672/?exchange=tavus-test"
    settings = settings_with(store, "rabbit", url)
    status, row = first_attempt(store, settings, "rabbit")
    assert status == "failed"
    assert row["last_error"] == "127.0.0.1 refused: AccessRefused"
    assert PASSWORD not in str(row)


def test_rabbitmq_unreachable_is_retried(store):
    settings = settings_with(store, "rabbit", "amqp://guest:guest@127.0.0.1:1/")
    status, row = first_attempt(store, settings, "rabbit")
    assert status == "retrying"
    assert row["last_error"].startswith("127.0.0.1 unavailable: ")


# --- s3://bucket/prefix, gs://bucket/prefix, azure_blob://account/container/prefix ----------

ARCHIVE_SCHEMES = {"s3": "s3", "gcs": "gs", "azure_blob": "azure_blob"}


def archive_settings(store, emulators, monkeypatch, provider: str, bucket: str = BUCKET):
    """A destination archiving into ``bucket`` of ``provider``'s stand-in, with the worker's
    credentials; its prefix, new for each test."""
    for key, value in emulators.worker_env().items():
        monkeypatch.setenv(key, value)
    prefix = f"archive-{uuid.uuid4().hex[:8]}"
    place = f"devstoreaccount1/{bucket}" if provider == "azure_blob" else bucket
    url = f"{ARCHIVE_SCHEMES[provider]}://{place}/{prefix}/tavus"
    settings = settings_with(store, "archive", url).with_overrides(
        azure_storage_connection_string=emulators.azurite.connection_string()
    )
    return settings, f"{prefix}/tavus/"


def archived(emulators, provider: str, prefix: str) -> dict[str, tuple[bytes, dict, str]]:
    """Every object under ``prefix``, read with the provider's own client: key -> (bytes,
    metadata, content type)."""
    found = {}
    if provider == "s3":
        s3 = emulators.moto.client()
        for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
            got = s3.get_object(Bucket=BUCKET, Key=item["Key"])
            found[item["Key"]] = (got["Body"].read(), got["Metadata"], got["ContentType"])
    elif provider == "gcs":
        for blob in emulators.gcs.client().list_blobs(BUCKET, prefix=prefix):
            found[blob.name] = (blob.download_as_bytes(), blob.metadata, blob.content_type)
    else:
        container = emulators.azurite.client().get_container_client(BUCKET)
        for item in container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            data = container.download_blob(item.name).readall()
            found[item.name] = (data, item.metadata, item.content_settings.content_type)
    return found


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bucket_archives_each_event_once_at_its_dated_key(
    store, emulators, monkeypatch, provider
):
    settings, prefix = archive_settings(store, emulators, monkeypatch, provider)
    events = lifecycle(store, f"c-archive-{provider}")
    for event_id, message in events:
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]
    with store.session() as session:  # redeliver writes the same bytes at the same key
        [task] = forwarding.redeliver(session, settings, events[0][0], "archive")
    assert forwarding.deliver(store, *task["args"], settings).status == "delivered"

    objects = archived(emulators, provider, prefix)
    assert len(objects) == len(events)
    for event_id, message in events:
        day = time.strftime("%Y/%m/%d", time.gmtime(message["received_at"]))
        data, metadata, content_type = objects[f"{prefix}{message['kind']}/{day}/{event_id}.json"]
        assert data.decode() == message["body"] and content_type == "application/json"
        assert {k: metadata.get(k) for k in ("kind", "type", "source")} == {
            "kind": message["kind"],
            "type": message["event_type"],
            "source": "callback",
        }
        assert metadata["received_at"].startswith(day.replace("/", "-"))
    assert {r["type"] for r in rows(store, "archive")} == {"archive"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_bucket_that_does_not_exist_fails_at_once(store, emulators, monkeypatch, provider):
    settings, _ = archive_settings(store, emulators, monkeypatch, provider, "no-such-bucket")
    status, row = first_attempt(store, settings, "archive")
    assert status == "failed"
    assert row["last_error"]


# --- sqs://<queue-name>?region=<region>, sqs+http(s)://<the queue's URL> -------------------


def received(sqs, queue_url: str) -> list[dict]:
    messages = []
    while batch := sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        AttributeNames=["All"],
    ).get("Messages"):
        messages += batch
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
    return messages


@pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
def test_sqs_gets_one_message_per_event_with_its_attributes(store, sqs, moto_sqs, fifo):
    name = f"tavus-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true"} if fifo else {}
    queue_url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    # By name (looked up), and by the queue's URL: the two forms reach the same queue.
    by_name = settings_with(store, "queue", f"sqs://{name}?region=us-east-1")
    by_url = settings_with(store, "queue", "sqs+" + queue_url)
    events = lifecycle(store, f"c-sqs-{fifo}")
    for i, (event_id, message) in enumerate(events):
        settings = by_url if i % 2 else by_name
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]
        assert [o.status for o in deliver_all(store, settings, event_id, message)] == ["delivered"]

    got = received(sqs, queue_url)
    by_id = {m["MessageAttributes"]["event_id"]["StringValue"]: m for m in got}
    assert len(got) == len(by_id) == len(events)
    for event_id, message in events:
        sent = by_id[event_id]
        assert sent["Body"] == message["body"]
        attributes = {k: v["StringValue"] for k, v in sent["MessageAttributes"].items()}
        assert attributes.get("kind") == message["kind"]
        assert attributes.get("type") == message["event_type"]
        assert attributes.get("source") == "callback"
        if fifo:
            assert sent["Attributes"]["MessageGroupId"] == f"c-sqs-{fifo}"
            assert sent["Attributes"]["MessageDeduplicationId"] == event_id
    assert {r["type"] for r in rows(store, "queue")} == {"sqs"}


def test_an_sqs_queue_that_does_not_exist_fails_at_once(store, sqs):
    settings = settings_with(store, "queue", "sqs://no-such-queue?region=us-east-1")
    status, row = first_attempt(store, settings, "queue")
    assert status == "failed"
    assert row["last_error"].startswith("SQS queue no-such-queue: 400")


def test_sqs_unreachable_is_retried(store, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = settings_with(store, "queue", "sqs+http://127.0.0.1:1/000000000000/q")
    status, row = first_attempt(store, settings, "queue")
    assert status == "retrying"
    assert row["last_error"] == "SQS queue q unreachable: EndpointConnectionError"


# --- a toy type, registered from here: the recipe in docs/architecture.md, end to end ---------

TOY_QUEUES: dict[str, list[tuple[str, str]]] = {}  # queue -> (event id, body), as "sent"


class ToyQueueDestination(UrlDestination):
    """A destination type as a contributor writes one: this class and one line in TYPES."""

    settings = DestinationSettings(
        "toy_queue",
        ("toy",),
        (
            per_destination(
                "QUEUE", marshmallow_fields.String(required=True), None, "the toy queue"
            ),
        ),
        about="`toy://<host>/`: the tests' own type.",
    )

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        self.queue = self.options["queue"]

    def deliver(self, event: ForwardedEvent) -> Answer:
        TOY_QUEUES.setdefault(self.queue, []).append((event.id, event.raw))
        return Answer(excerpt=f"queued on {self.queue}")


def test_a_toy_destination_type_is_one_class_and_one_line(
    sqlite_store, redis_url, tmp_path, monkeypatch
):
    monkeypatch.setattr(destinations, "TYPES", (*destinations.TYPES, ToyQueueDestination))
    env = {"FORWARD_JOBS_URL": "toy://jobs.example.com/", "FORWARD_JOBS_QUEUE": "tavus-jobs"}
    from_env = Settings.from_env(env).forward_destinations
    settings = console_settings(
        redis_url, sqlite_store.url, tmp_path, forward_destinations=from_env
    )
    destinations.check(settings)  # the worker's start reads it, and refuses it without its QUEUE
    with pytest.raises(SettingsError, match="FORWARD_JOBS_QUEUE"):
        destinations.check(Settings.from_env({"FORWARD_JOBS_URL": "toy://jobs.example.com/"}))
    assert "`FORWARD_<NAME>_QUEUE`" in reference.markdown(destinations.forward_types())

    events = lifecycle(sqlite_store, "c-toy")
    for event_id, message in events:
        assert [o.status for o in deliver_all(sqlite_store, settings, event_id, message)] == [
            "delivered"
        ]
    assert TOY_QUEUES["tavus-jobs"] == [(e, m["body"]) for e, m in events]
    listed = rows(sqlite_store, "jobs")
    assert {(r["type"], r["status"]) for r in listed} == {("toy_queue", "delivered")}

    # The API and the console show the type, with no edit of theirs.
    client = create_app(settings).test_client()
    api = client.get("/api/v1/deliveries", headers=BEARER, query_string={"destination": "jobs"})
    assert {d["destination_type"] for d in api.json["data"]} == {"toy_queue"}
    sign_in(client)
    page = client.get("/console/deliveries")
    assert page.status_code == 200 and b"forward (toy_queue)" in page.data

    # redeliver goes through the task its recorded type names.
    with sqlite_store.session() as session:
        [task] = forwarding.redeliver(session, settings, events[0][0], "jobs")
    assert forwarding.deliver(sqlite_store, *task["args"], settings).status == "delivered"
    assert TOY_QUEUES["tavus-jobs"][-1][0] == events[0][0]


# --- every type at once, behind a real worker: the "done when" -----------------------

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
TOOL_SECRET = "tavus-tool-secret-e2e-8c1f0b7d"  # TAVUS_SIGNING_SECRETS: post-call actions


@pytest.mark.integration
def test_every_simulated_event_reaches_every_type_once(
    redis_url, sqlite_url, tmp_path, stream_redis, rabbit, emulators, moto_sqs, sqs
):
    store = Store(sqlite_url)
    store.upgrade()
    channel, made = rabbit
    exchange = f"tavus-e2e-{uuid.uuid4().hex[:8]}"
    made.append(exchange)
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    rabbit_queue = bound_queue(channel, exchange, "#")
    sqs_name = f"tavus-e2e-{uuid.uuid4().hex[:8]}.fifo"
    sqs_url = sqs.create_queue(QueueName=sqs_name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    stream_redis_url = stream_redis.url  # no password: redis-server's default user
    stream = redis.Redis.from_url(stream_redis_url)
    stream.config_set("requirepass", PASSWORD)  # the worker's URL carries it; logs must not
    sink = HttpSink().start()
    settings = Settings(
        callback_tokens=(TOKEN,),
        redis_url=redis_url,
        database_url=sqlite_url,
        tavus_signing_secrets=(TOOL_SECRET,),
    )
    env = worker_env(
        settings,
        **emulators.worker_env(),
        AWS_ENDPOINT_URL_SQS=moto_sqs,
        FORWARD_APP_URL=f"{sink.url}/tavus/webhook",
        FORWARD_APP_SECRET=SECRET,
        FORWARD_STREAM_URL=stream_redis_url.replace("redis://", f"redis://:{PASSWORD}@")
        + "?stream=tavus&maxlen=10000",
        FORWARD_MQ_URL=f"{RABBITMQ}?exchange={exchange}",
        FORWARD_ARCHIVE_URL=f"s3://{BUCKET}/{prefix}",
        FORWARD_GCS_URL=f"gs://{BUCKET}/{prefix}",
        FORWARD_AZURE_URL=f"azure_blob://devstoreaccount1/{BUCKET}/{prefix}",
        FORWARD_JOBS_URL=f"sqs://{sqs_name}?region=us-east-1",
    )
    worker = Worker(env, tmp_path / "worker.log", queues="events,forward").start()
    try:
        from cli import simulate
        from receiver import create_app as receiver_app

        client = receiver_app(settings).test_client()
        accepted = []
        for name in simulate.SCENARIOS:
            for body in simulate.scenario(name, post_call=True):  # + a signed post-call action
                if simulate.is_tool_delivery(body):  # signed, as Tavus does: no token needed
                    raw, headers = simulate.signed(body, TOOL_SECRET)
                    path = "/callbacks"
                else:
                    raw, headers = orjson.dumps(body), {"Content-Type": "application/json"}
                    path = f"/callbacks/{TOKEN}"
                for _ in range(2):  # Tavus's repeats change nothing
                    answer = client.post(path, data=raw, headers=headers)
                    assert answer.status_code in (200, 202), answer.json
                    if answer.json["status"] == "accepted":
                        accepted.append(raw)
        names = ("app", "stream", "mq", "archive", "gcs", "azure", "jobs")

        def all_delivered() -> bool:
            with store.session() as session:
                found = queries.list_deliveries(session, limit=10_000)
            return len(found) == len(names) * len(accepted) and all(
                d["status"] == "delivered" for d in found
            )

        wait_until(all_delivered, timeout=120)
        time.sleep(1)  # anything sent twice would have arrived by now
        with store.session() as session:
            listed = queries.list_deliveries(session, limit=10_000)
        assert {(d["destination"], d["type"]) for d in listed} == {
            ("app", "webhook"), ("stream", "redis_stream"), ("mq", "amqp"),
            ("archive", "archive"), ("gcs", "archive"), ("azure", "archive"), ("jobs", "sqs"),
        }  # fmt: skip
        ids = {d["event_id"] for d in listed}
        assert len(ids) == len(accepted)
        with store.session() as session:
            [tool] = session.scalars(select(Event.id).where(Event.kind == "tool"))
        assert tool in ids  # the signed post-call action, forwarded like every event

        webhook = {r.headers["webhook-id"] for r in verified(sink.received, SECRET)}
        in_stream = [f[b"id"].decode() for _, f in stream.xrange("tavus")]
        in_rabbit = [m.properties["message_id"] for m in drained(channel, rabbit_queue)]
        in_bucket = [
            item["Key"].rsplit("/", 1)[-1].removesuffix(".json")
            for item in emulators.moto.client()
            .list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            .get("Contents", [])
        ]
        in_sqs = [m["MessageAttributes"]["event_id"]["StringValue"] for m in received(sqs, sqs_url)]
        in_gcs = [
            blob.name.rsplit("/", 1)[-1].removesuffix(".json")
            for blob in emulators.gcs.client().list_blobs(BUCKET, prefix=f"{prefix}/")
        ]
        container = emulators.azurite.client().get_container_client(BUCKET)
        in_azure = [
            item.name.rsplit("/", 1)[-1].removesuffix(".json")
            for item in container.list_blobs(name_starts_with=f"{prefix}/")
        ]
        for got in (webhook, in_stream, in_rabbit, in_bucket, in_gcs, in_azure, in_sqs):
            assert sorted(got) == sorted(ids)  # each event once, everywhere
    finally:
        worker.stop()
        sink.stop()
        store.dispose()
    assert PASSWORD not in worker.output()


def test_a_bad_destination_url_stops_the_worker_at_start(redis_url, sqlite_url, tmp_path):
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url)
    env = worker_env(settings, FORWARD_MQ_URL=f"amqp://guest:{PASSWORD}@mq.example.com/?q=1")
    started = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "forward"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode != 0
    assert "FORWARD_MQ_URL" in started.stderr and "unknown or repeated option" in started.stderr
    assert PASSWORD not in started.stderr + started.stdout
