"""The Celery app's delivery settings and the receiver's message format, against a real Redis."""

from __future__ import annotations

import base64
import importlib
import shlex
import signal
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis

from receiver import create_app
from schemas.messages import (
    EVENTS_QUEUE,
    PROCESS_EVENT,
    PURGE,
    RECONCILE,
    STORAGE_QUEUE,
    VERIFY_RECORDING,
    celery_envelope,
)
from schemas.settings import Settings
from tests.celery_probe import HELD, HOLD
from tests.helpers import TOKEN, fixture, worker_env
from tests.services import ROOT, RedisServer, Worker, base_env, wait_until
from workers import broker


@pytest.fixture
def celery_app_module():
    # Importing it reads no environment: the worker's app is built when `celery -A` asks.
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
    quiet = celery_app_module.periodic_tasks(Settings(retention_days=0))
    assert quiet == {}
    schedule = celery_app_module.periodic_tasks(
        Settings(tavus_api_key="k", reconcile_interval_seconds=120, retention_days=0)
    )
    [entry] = schedule.values()
    assert (entry["task"], entry["schedule"], entry["options"]) == (
        RECONCILE,
        120.0,
        {"expires": 120},
    )


def test_beat_purges_every_purge_interval_unless_everything_is_kept(celery_app_module) -> None:
    schedule = celery_app_module.periodic_tasks(Settings(purge_interval_seconds=600))
    [entry] = schedule.values()
    assert (entry["task"], entry["schedule"], entry["options"]) == (
        PURGE,
        600.0,
        {"expires": 600},
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


class ProbeWorker(Worker):
    """A real worker of tests/celery_probe.py: the workers' app, a recording PROCESS_EVENT."""

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("workers.celery_app")] = "tests.celery_probe"
        return command


@pytest.mark.integration
def test_a_real_worker_runs_the_message_the_receiver_built(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Guards the receiver's lean message against the locked Celery and kombu: the worker takes
    it, sees its argument, id and queue as sent, retries it with Celery's own retry, acks it."""
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, spool_dir=str(tmp_path))
    client = create_app(settings).test_client()
    answer = client.post(f"/callbacks/{TOKEN}", data=fixture("shutdown"))
    assert answer.status_code == 202
    event_id = answer.json["event_id"]
    env = base_env(REDIS_URL=redis_url, CALLBACK_TOKENS=TOKEN)
    worker = ProbeWorker(env, tmp_path / "worker.log", concurrency=1, queues=EVENTS_QUEUE).start()
    try:
        wait_until(lambda: redis_client.llen("probe:recorded") == 2, timeout=30)
        wait_until(
            lambda: not redis_client.llen(EVENTS_QUEUE) and not redis_client.hlen("unacked"),
            timeout=10,
        )  # acked, nothing left to redeliver
    finally:
        worker.stop()
    first, retried = (orjson.loads(raw) for raw in redis_client.lrange("probe:recorded", 0, -1))
    [message] = first["args"]
    assert message["event_id"] == event_id and message["body"] == fixture("shutdown").decode()
    assert (first["id"], first["retries"], first["eta"]) == (event_id, 0, None)
    assert first["routing_key"] == EVENTS_QUEUE
    assert first["argsrepr"] == f"[<{PROCESS_EVENT} {event_id}>]"  # a failure never logs the body
    assert (retried["id"], retried["retries"], retried["args"]) == (event_id, 1, first["args"])
    log = (tmp_path / "worker.log").read_text()
    assert fixture("shutdown").decode()[:40] not in log


@pytest.mark.integration
def test_one_take_fills_the_free_prefetch_slots_and_each_message_stays_unacked_until_acked(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A worker of four pool processes (prefetch 4) takes the four waiting messages in one take
    (workers/broker.py's _TAKE), each recorded as unacked by that take: a SIGKILL while they run
    leaves them all in ``unacked``, and the visibility-timeout sweep hands them to the next
    worker, which runs and acks them."""
    ids = [f"m-{n}" for n in range(4)]
    for task_id in ids:
        redis_client.lpush(EVENTS_QUEUE, celery_envelope(HOLD, task_id, [], EVENTS_QUEUE))
    env = base_env(REDIS_URL=redis_url, PROBE_HOLD_SECONDS="60")
    log = tmp_path / "worker.log"
    worker = ProbeWorker(env, log, concurrency=4, queues=EVENTS_QUEUE).start()
    try:
        wait_until(lambda: redis_client.llen(HELD) == 4, timeout=30)
        taken = redis_client.zrange("unacked_index", 0, -1, withscores=True)
        # One take: the four were recorded by the same script, at the same instant.
        assert len(taken) == 4 and len({score for _, score in taken}) == 1, taken
        assert redis_client.hlen("unacked") == 4 and not redis_client.llen(EVENTS_QUEUE)
    finally:
        worker.stop(signal.SIGKILL)
    assert redis_client.hlen("unacked") == 4  # none acked, none lost

    # The next worker's sweep finds them past its visibility timeout and runs them again.
    env = base_env(REDIS_URL=redis_url, VISIBILITY_TIMEOUT_SECONDS="5")
    worker = ProbeWorker(env, tmp_path / "next.log", concurrency=4, queues=EVENTS_QUEUE).start()
    try:
        wait_until(lambda: redis_client.llen(HELD) == 8, timeout=30)
        wait_until(
            lambda: not redis_client.hlen("unacked") and not redis_client.llen(EVENTS_QUEUE),
            timeout=10,
        )  # acked
    finally:
        worker.stop()
    held = [task_id.decode() for task_id in redis_client.lrange(HELD, 0, -1)]
    assert sorted(held[:4]) == sorted(held[4:]) == ids


def test_the_receivers_message_is_half_the_size_of_celerys_own(
    celery_app_module, redis_url: str, redis_client: redis.Redis
) -> None:
    """No base64 and no header Celery reads with a default: the bytes every request pays to
    send, Redis to copy and the worker to parse."""
    message = {"event_id": "e-1", "body": fixture("transcription_ready").decode()}
    ours = celery_envelope(PROCESS_EVENT, "e-1", [message], EVENTS_QUEUE)
    app = celery_app_module.create_celery(Settings(redis_url=redis_url))
    app.send_task(PROCESS_EVENT, args=[message], task_id="e-1")
    theirs = redis_client.rpop(EVENTS_QUEUE)
    assert len(ours) < 0.6 * len(theirs)


class ProcfileWorker(Worker):
    """The Procfile's worker line itself, its ``VAR=value`` prefix in the environment."""

    def command(self) -> list[str]:
        lines = (ROOT / "Procfile").read_text().splitlines()
        line = next(line for line in lines if line.startswith("worker:"))
        words = shlex.split(line.removeprefix("worker:"))
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            self.env[name] = value
        assert words[0] == "celery"
        return [sys.executable, "-m", *words, "-n", "procfile@%h"]


def test_the_procfile_worker_takes_its_pool_size_from_celery_worker_concurrency(
    settings: Settings, tmp_path: Path
) -> None:
    # "Sizing" in docs/operations.md: CELERY_WORKER_CONCURRENCY sets the worker dyno's pool,
    # the Procfile unchanged.
    env = worker_env(settings, CELERY_WORKER_CONCURRENCY="3")
    worker = ProcfileWorker(env, tmp_path / "worker.log").start()
    try:
        assert "concurrency: 3 (prefork)" in worker.output()
        pool = psutil.Process(worker.process.pid).children()
        assert len(pool) == 3, worker.output()[-2000:]
    finally:
        worker.stop()


def test_every_task_is_a_stage_task_bounded_by_the_setting_named_for_its_stage() -> None:
    """One task base; each stage's attempts come from the setting named for what it bounds."""
    probe = (
        "import json\n"
        "from workers.celery_app import celery\n"
        "from workers.tasks.base import StageTask\n"
        "import workers.tasks.alerts, workers.tasks.events, workers.tasks.forward\n"
        "import workers.tasks.reconcile, workers.tasks.storage, workers.tasks.lifecycle\n"
        "print(json.dumps({n: [isinstance(t, StageTask), t.stage, t.max_attempts()]\n"
        "    for n, t in celery.tasks.items() if n.startswith('tavus.')}))\n"
    )
    env = base_env(
        REDIS_URL="redis://127.0.0.1:1/0",
        MAX_EVENT_ATTEMPTS="5",
        ALERT_DELIVERY_ATTEMPTS="4",
        HOOK_MAX_ATTEMPTS="3",
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {
        "tavus.events.process": [True, "events", 5],
        "tavus.events.reconcile": [True, "reconcile", 5],
        "tavus.events.purge": [True, "purge", 5],
        "tavus.storage.verify_recording": [True, "storage", 5],
        "tavus.forward.deliver": [True, "forward", 5],
        "tavus.alerts.raise": [True, "alerts", 4],
        "tavus.alerts.deliver": [True, "alerts", 4],
        "tavus.hooks.run": [True, "hooks", 3],
    }


@pytest.mark.integration
@pytest.mark.parametrize("from_start", [False, True], ids=["default", "WORKER_TASK_EVENTS"])
def test_task_events_are_sent_only_when_a_monitor_asks_or_the_setting_says(
    celery_app_module, redis_url: str, redis_client: redis.Redis, tmp_path: Path, from_start: bool
) -> None:
    """Each task event is a Redis round trip of the worker's main process: by default none is
    sent until a monitor asks (`celery control enable_events`, as Flower does every 5 s);
    WORKER_TASK_EVENTS=true sends them from the start, for celery-exporter."""
    listener = redis_client.pubsub()
    listener.psubscribe("*celeryev*")
    env = base_env(REDIS_URL=redis_url, WORKER_TASK_EVENTS=str(from_start).lower())
    log = tmp_path / "worker.log"
    worker = ProbeWorker(env, log, concurrency=1, queues=EVENTS_QUEUE, heartbeat=True).start()
    try:
        assert _task_events_of(["before"], redis_client, listener) == (
            {"task-received", "task-started", "task-succeeded"} if from_start else set()
        )
        control = celery_app_module.create_celery(Settings(redis_url=redis_url)).control
        control.enable_events()
        assert _task_events_of(["after"], redis_client, listener) == {
            "task-received",
            "task-started",
            "task-succeeded",
        }
    finally:
        worker.stop()
        listener.close()


def _task_events_of(ids: list[str], redis_client: redis.Redis, listener: Any) -> set[str]:
    """Run ``ids`` as probe tasks; the types of the task events published about them."""
    while listener.get_message(timeout=0.1) is not None:
        pass  # what came before
    for task_id in ids:
        redis_client.lpush(EVENTS_QUEUE, celery_envelope(HOLD, task_id, [], EVENTS_QUEUE))
    wait_until(lambda: redis_client.lrange(HELD, 0, -1)[-1:] == [ids[-1].encode()], timeout=30)
    wait_until(lambda: not redis_client.hlen("unacked"), timeout=10)
    types = set()
    while (message := listener.get_message(timeout=1.0)) is not None:
        if message["type"] != "pmessage" or b"/task." not in message["channel"]:
            continue  # worker heartbeats go out either way
        events = orjson.loads(base64.b64decode(orjson.loads(message["data"])["body"]))
        for event in events if isinstance(events, list) else [events]:  # task.multi: a batch
            if event.get("uuid") in ids:
                types.add(event["type"])
    return types
