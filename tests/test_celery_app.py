"""The Celery app's delivery settings, checked against a real Redis (no worker needed)."""

from __future__ import annotations

import base64
import importlib
import signal
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis

from receiver.publisher import celery_envelope
from schemas.messages import EVENTS_QUEUE, PROCESS_EVENT, RECONCILE, STORAGE_QUEUE, VERIFY_RECORDING
from schemas.settings import Settings
from tests.services import RedisServer
from workers import broker


@pytest.fixture
def celery_app_module(monkeypatch: pytest.MonkeyPatch):
    # The module builds the worker's app from the environment on import; nothing connects yet.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    return importlib.import_module("workers.celery_app")


def test_no_task_is_scheduled_past_half_the_visibility_timeout(
    celery_app_module, redis_url: str, redis_client: redis.Redis
) -> None:
    app = celery_app_module.create_celery(
        Settings(redis_url=redis_url, visibility_timeout_seconds=60)
    )
    app.send_task(PROCESS_EVENT, args=[{}], countdown=3600)
    app.send_task(PROCESS_EVENT, args=[{}], countdown=10)
    etas = []
    for raw in reversed(redis_client.lrange(EVENTS_QUEUE, 0, -1)):
        etas.append(datetime.fromisoformat(orjson.loads(raw)["headers"]["eta"]))
    now = datetime.now(UTC)
    assert now + timedelta(seconds=25) < etas[0] <= now + timedelta(seconds=30)
    assert etas[1] <= now + timedelta(seconds=10)  # shorter ones are left alone


def test_routing_survives_a_redis_wipe(
    celery_app_module, redis_url: str, redis_client: redis.Redis
) -> None:
    """A long-lived publisher (a worker) keeps routing after FLUSHALL: no binding is needed."""
    app = celery_app_module.create_celery(Settings(redis_url=redis_url))
    app.send_task(VERIFY_RECORDING, args=["before"])
    redis_client.flushall()
    app.send_task(VERIFY_RECORDING, args=["after"])
    [raw] = redis_client.lrange(STORAGE_QUEUE, 0, -1)
    body = orjson.loads(base64.b64decode(orjson.loads(raw)["body"]))
    assert body[0] == ["after"]


def test_beat_runs_reconciliation_only_with_an_api_key(celery_app_module) -> None:
    quiet = celery_app_module.periodic_tasks(Settings())
    assert quiet == {}
    schedule = celery_app_module.periodic_tasks(
        Settings(tavus_api_key="k", reconcile_interval_seconds=120)
    )
    [entry] = schedule.values()
    assert (entry["task"], entry["schedule"], entry["options"]) == (
        RECONCILE,
        120.0,
        {"expires": 120},
    )


def test_a_killed_workers_messages_are_swept_at_least_every_ten_seconds(celery_app_module) -> None:
    options = celery_app_module.transport_options(Settings(visibility_timeout_seconds=900))
    assert options["visibility_timeout"] == 900
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] == 10
    short = celery_app_module.transport_options(Settings(visibility_timeout_seconds=10))
    assert short["unacked_restore_interval"] == 1


@pytest.mark.parametrize(
    ("verify", "cert_reqs"), [(False, ssl.CERT_NONE), (True, ssl.CERT_REQUIRED)]
)
def test_rediss_still_means_tls_with_our_transport(celery_app_module, verify, cert_reqs) -> None:
    settings = Settings(redis_url="rediss://:pw@redis.example.com:6380/0", redis_tls_verify=verify)
    connection = celery_app_module.create_celery(settings).connection_for_write()
    assert connection.transport_cls == "workers.broker:Transport"
    assert (connection.hostname, connection.port) == ("redis.example.com", 6380)
    assert connection.ssl == {"ssl_cert_reqs": cert_reqs}


def test_a_message_taken_as_redis_dies_goes_back_to_its_queue(
    celery_app_module, tmp_path: Path
) -> None:
    """BRPOP took it out of its queue; recording it as unacked fails: the consumer must not get
    it (Celery would drop it with its reserved requests), and once Redis answers again it is
    back in its queue."""
    server = RedisServer(tmp_path / "redis").start()
    app = celery_app_module.create_celery(Settings(redis_url=server.url))
    envelope = orjson.loads(celery_envelope(PROCESS_EVENT, "e-taken", [{}], EVENTS_QUEUE))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        message = channel.Message(envelope, channel=channel)
        server.stop(signal.SIGKILL)
        with pytest.raises(channel.connection_errors):
            channel.qos.append(message, message.delivery_tag)
        assert message.delivery_tag not in channel.qos._delivered
    server.start()
    with app.connection_for_write() as connection:
        broker._push_back_taken(connection.default_channel)
    try:
        queued = redis.Redis.from_url(server.url).lrange(EVENTS_QUEUE, 0, -1)
        assert len(queued) == 1 and b"e-taken" in queued[0]
    finally:
        server.stop()
