"""OpenTelemetry traces (docs/tracing.md): one callback's trace, from the intake to the user's
endpoint, as a real OTLP/HTTP receiver gets it from the web process (real gunicorn) and a real
Celery worker, both exporting with the SDK's own OTLP/HTTP exporter; the user's endpoint sees
the same trace in ``traceparent``. With the variables unset, nothing of OpenTelemetry is even
imported by the receiver, and the queue message carries nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
import requests

from cli import simulate
from schemas import tracing
from schemas.settings import ForwardDestination, Settings
from tests.helpers import TOKEN, deliver_all, stored_event, worker_env
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.services import ROOT, RedisServer, Web, Worker, wait_until
from tests.sinks import HttpSink, verified
from workers.store.db import Store

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "dHJhY2luZy10ZXN0LXNlY3JldC0zMi1ieXRlcyEhISE="


def otel_env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    """The standard variables, as an operator sets them; a short batch delay for the test."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    }


def a_callback() -> bytes:
    body = next(iter(simulate.scenario("conversation")))
    return orjson.dumps(body)


def start(span: ReceivedSpan) -> int:
    return span.start_ns


def by_name(spans: list[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name.startswith(prefix)]


def the(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_one_callback_is_one_trace_from_the_intake_to_the_users_endpoint(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    store.dispose()
    receiver = OtlpReceiver().start()
    sink = HttpSink(statuses=(503,)).start()  # the user's endpoint fails once: a retry
    sink.headers = {"Retry-After": "1"}
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url)
    env = worker_env(settings, LOG_FORMAT="json", **otel_env(receiver))
    worker = Worker(
        {**env, "FORWARD_APP_URL": f"{sink.url}/hook", "FORWARD_APP_SECRET": SECRET},
        tmp_path / "worker.log",
        queues="events,storage,alerts,forward,hooks",
    ).start()
    web = Web(env, tmp_path / "web.log", workers=1).start()
    try:
        answer = requests.post(
            f"{web.url}/callbacks/{TOKEN}",
            data=a_callback(),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        event_id = answer.json()["event_id"]
        wait_until(lambda: sink.accepted(), timeout=30)
        failed, delivered = verified(sink.received, SECRET)
        assert delivered.headers["webhook-id"] == event_id
        # The user's endpoint continues the trace: W3C `traceparent`, sampled; the attempt
        # that failed, and its retry, in the same trace.
        version, trace_id, parent_id, flags = delivered.headers["traceparent"].split("-")
        assert version == "00" and int(flags, 16) & 1  # sampled
        assert failed.headers["traceparent"].split("-")[1] == trace_id
        first_id = failed.headers["traceparent"].split("-")[2]

        def complete() -> list[ReceivedSpan] | None:
            spans = receiver.trace(trace_id)
            ids = {span.span_id for span in spans}
            ended = parent_id in ids and first_id in ids
            if ended and all(s.parent_id in ids for s in spans if s.parent_id):
                return spans
            return None

        spans = wait_until(complete, timeout=30)
    finally:
        web.stop()
        worker.stop()
        sink.stop()
        receiver.stop()

    # One root, the intake's SERVER span, and every other span's parent received too.
    [root] = [span for span in spans if span.parent_id is None]
    assert (root.name, root.kind) == ("POST /callbacks", "server")
    assert root.service == "tavus-callbacks-web"
    assert root.attributes["http.response.status_code"] == 202
    assert root.attributes["http.route"] == "/callbacks/<token>"
    # The enqueue, in the web process, carried the trace to the worker in the queue message.
    enqueue = the(spans, "send tavus.events.process")
    assert (enqueue.kind, enqueue.parent_id) == ("producer", root.span_id)
    assert enqueue.service == root.service
    assert enqueue.attributes["messaging.message.id"] == event_id
    process = the(spans, "process tavus.events.process")
    assert (process.kind, process.parent_id) == ("consumer", enqueue.span_id)
    assert process.service == "tavus-callbacks-worker"
    assert process.attributes["tavus.event_id"] == event_id
    [handler] = by_name(spans, "handle ")
    assert handler.parent_id == process.span_id
    assert handler.attributes["tavus.event_id"] == event_id
    # The forward task, queued by the worker, then its delivery: the span the endpoint saw,
    # once failing (503), then, in the retry Celery queued from the first task, delivered.
    follow_up = the(spans, "send tavus.forward.deliver")
    assert follow_up.parent_id == process.span_id
    first, retried = sorted(by_name(spans, "process tavus.forward.deliver"), key=start)
    assert (first.kind, first.parent_id) == ("consumer", follow_up.span_id)
    assert retried.parent_id == first.span_id and retried.attributes["celery.retries"] == 1
    attempts = sorted(by_name(spans, "deliver webhook app"), key=start)
    assert [(a.kind, a.parent_id) for a in attempts] == [
        ("client", first.span_id), ("client", retried.span_id)
    ]  # fmt: skip
    assert [a.span_id for a in attempts] == [first_id, parent_id]
    assert [a.attributes["tavus.attempt"] for a in attempts] == [1, 2]
    assert attempts[0].error and attempts[0].events == ["exception"]
    assert "Transient: HTTP 503" in attempts[0].status_message
    assert [span.name for span in spans if span.error] == ["deliver webhook app"]
    delivery, forward = attempts[1], retried
    # In time order, as a trace viewer lays them out.
    assert root.start_ns <= enqueue.start_ns <= process.start_ns <= delivery.start_ns
    assert delivery.end_ns <= forward.end_ns
    # No secret in any span: the token is in the path, never in a span.
    assert TOKEN not in json.dumps([span.attributes for span in spans], default=str)

    # The JSON log lines written within a span carry its trace id.
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    traced = [line for line in lines if line.get("event_id") == event_id and line["trace_id"]]
    assert traced and {line["trace_id"] for line in traced} == {trace_id}


IMPORTS = """
import sys
from receiver import create_app
from schemas.settings import ForwardDestination, Settings
app = create_app(Settings.from_env())
answer = app.test_client().post(
    "/callbacks/{token}", data={body!r}, content_type="application/json"
)
assert answer.status_code == 202, answer.json
print(sorted(name for name in sys.modules if name in TRACING_MODULES))
"""
# What tracing brings in. (Not the API as such: redis-py 8 imports the SDK's *metrics* package
# for its own optional metrics whenever the SDK is installed, which we never turn on.)
TRACING_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.propagate",
)


@pytest.mark.parametrize("traced", [False, True], ids=["off", "on"])
def test_tracing_off_imports_nothing_and_adds_nothing_to_the_queue_message(
    redis_url: str, traced: bool
) -> None:
    receiver = OtlpReceiver().start()
    env = {
        **worker_env(Settings(callback_tokens=(TOKEN,), redis_url=redis_url)),
        **(otel_env(receiver) if traced else {}),
    }
    for name in [key for key in env if key.startswith("OTEL_") and not traced]:
        del env[name]
    script = f"TRACING_MODULES = {TRACING_MODULES!r}\n" + IMPORTS.format(
        token=TOKEN, body=a_callback()
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        imported = done.stdout.strip().splitlines()[-1]
        envelope = orjson.loads(redis.Redis.from_url(redis_url).lrange("events", 0, -1)[0])
        if traced:
            assert imported == str(sorted(TRACING_MODULES))
            assert envelope["headers"]["traceparent"].startswith("00-")
            wait_until(lambda: by_name(receiver.received(), "POST /callbacks"), timeout=10)
        else:
            assert imported == "[]"  # not the tracing SDK, its exporter or the propagators
            assert set(envelope["headers"]) == {"task", "id", "argsrepr"}
    finally:
        receiver.stop()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """Tracing on in this process, exporting to a real OTLP/HTTP receiver; off again after."""
    receiver = OtlpReceiver().start()
    for name, value in otel_env(receiver).items():
        monkeypatch.setenv(name, value)
    assert tracing.start("tavus-callbacks-test", tracing.wanted(otel_env(receiver)))
    yield receiver
    tracing.shutdown()
    receiver.stop()


def amqp_bus(request: pytest.FixtureRequest, _: Path) -> tuple[str, Callable[[], dict]]:
    channel, made = request.getfixturevalue("rabbit")
    exchange = f"tavus-trace-{uuid.uuid4().hex[:8]}"
    made.append(exchange)
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    queue, _count, _consumers = channel.queue_declare("", exclusive=True)
    channel.queue_bind(queue, exchange, "#")

    def read() -> dict:
        headers = channel.basic_get(queue, no_ack=True).properties["application_headers"]
        return {"event_id": headers["tavus-event-id"], "traceparent": headers["traceparent"]}

    return f"amqp://guest:guest@127.0.0.1:5672/?exchange={exchange}", read


def sqs_bus(request: pytest.FixtureRequest, _: Path) -> tuple[str, Callable[[], dict]]:
    sqs = request.getfixturevalue("sqs")
    queue_url = sqs.create_queue(QueueName=f"tavus-trace-{uuid.uuid4().hex[:8]}")["QueueUrl"]

    def read() -> dict:
        [got] = sqs.receive_message(QueueUrl=queue_url, MessageAttributeNames=["All"])["Messages"]
        return {name: value["StringValue"] for name, value in got["MessageAttributes"].items()}

    return "sqs+" + queue_url, read


def redis_bus(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], dict]]:
    server = RedisServer(tmp_path / "stream-redis").start()
    request.addfinalizer(server.stop)

    def read() -> dict:
        [(_entry, fields)] = redis.Redis.from_url(server.url, decode_responses=True).xrange("tavus")
        return {"event_id": fields["id"], "traceparent": fields["traceparent"]}

    return f"{server.url}?stream=tavus", read


BUSES = {"amqp": amqp_bus, "sqs": sqs_bus, "redis_stream": redis_bus}


@pytest.mark.parametrize("bus", list(BUSES))
def test_a_bus_message_carries_the_delivery_span_as_traceparent(
    bus: str,
    traced: OtlpReceiver,
    sqlite_store: Store,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    url, read = BUSES[bus](request, tmp_path)
    destination = ForwardDestination("bus", url, ("*",), {})
    settings = Settings(database_url=sqlite_store.url, forward_destinations=(destination,))
    event_id, message = stored_event(sqlite_store, a_callback())
    with tracing.span("process tavus.forward.deliver", "consumer"):
        outcomes = deliver_all(sqlite_store, settings, event_id, message)
    assert [outcome.status for outcome in outcomes] == ["delivered"]
    tracing.flush()
    [delivery] = wait_until(lambda: by_name(traced.received(), "deliver "))
    assert (delivery.name, delivery.kind) == (f"deliver {bus} bus", "client")
    assert delivery.attributes["tavus.event_id"] == event_id
    got = read()
    assert got["event_id"] == event_id
    assert got["traceparent"].startswith(f"00-{delivery.trace_id}-{delivery.span_id}-")
