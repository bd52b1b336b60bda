"""LOG_FORMAT=json: real gunicorn, a real Celery worker and beat write one JSON object per line,
with the event's ids where they are known, and redacted exactly as the text logs are."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from schemas.logs import JsonFormatter
from schemas.redaction import RedactingFilter
from schemas.settings import Settings, SettingsError
from tests.conftest import TOKEN, fixture_json
from tests.services import Beat, RedisServer, Web, Worker, base_env, wait_until
from tests.test_hostile_http import exchange
from workers.logs import ids_of
from workers.store.db import Store

KEYS = {"time", "level", "logger", "message", "event_id", "conversation_id", "task", "trace_id"}
# Celery's shutdown notices, written straight to stdout from its signal handler after a blank
# line (not logged; docs/observability.md says so).
CELERY_NOTICES = {"", "worker: Warm shutdown (MainProcess)", "worker: Cold shutdown (MainProcess)"}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log, each parsed as one JSON object (a line that is not fails the test)."""
    lines = [line for line in path.read_text().splitlines() if line not in CELERY_NOTICES]
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: not a JSON line: {line[:200]!r}")
    for record in parsed:
        assert record.keys() >= KEYS, record
    return parsed


def with_id(records: list[dict[str, Any]], event_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event_id"] == event_id]


@pytest.mark.integration
def test_web_worker_and_beat_log_json_lines_with_ids_and_no_secret(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    store = Store(f"sqlite:///{tmp_path / 'events.db'}")
    store.upgrade()
    env = base_env(
        LOG_FORMAT="json",
        REDIS_URL=server.url,
        DATABASE_URL=store.url,
        CALLBACK_TOKENS=TOKEN,
        SPOOL_DIR=str(tmp_path / "spool"),
        SPOOL_DRAIN_INTERVAL_SECONDS="1",
    )
    web, worker, beat = (
        Web(env, tmp_path / "web.log"),
        Worker(env, tmp_path / "worker.log"),
        Beat(env, tmp_path / "beat.log"),
    )
    body = fixture_json("replica_joined")
    body["conversation_id"] = "cjsonlogs0001"
    try:
        for service in (web, worker, beat):
            service.start(ready_timeout=90)
        callback = f"{web.url}/callbacks/{TOKEN}"
        accepted = requests.post(callback, data=orjson.dumps(body), timeout=10).json()
        # gunicorn quotes a broken request line, token and all
        broken = f"POST /callbacks/{TOKEN}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert exchange(web.port, broken).status == 400
        server.stop()  # the next callback is spooled, and logged with its ids
        body["conversation_id"] = "cjsonlogs0002"
        spooled = requests.post(callback, data=orjson.dumps(body), timeout=10).json()
        assert spooled["status"] == "spooled"
        server.start()  # the web drains its spool; the worker processes both

        def processed(event_id: str) -> bool:
            text = worker.log_path.read_text()
            return event_id in text and "succeeded" in text.split(event_id, 1)[1]

        for reply in (accepted, spooled):
            wait_until(lambda reply=reply: processed(reply["event_id"]), timeout=60, interval=0.5)
        time.sleep(0.5)
    finally:
        for service in (beat, worker, web):
            service.stop()
        server.stop()
        store.dispose()

    web_lines, worker_lines, beat_lines = (json_lines(s.log_path) for s in (web, worker, beat))
    spooling = with_id(web_lines, spooled["event_id"])
    assert [(r["level"], r["conversation_id"]) for r in spooling] == [("WARNING", "cjsonlogs0002")]
    assert any("Invalid HTTP request line" in r["message"] for r in web_lines)
    for reply, conversation in ((accepted, "cjsonlogs0001"), (spooled, "cjsonlogs0002")):
        done = [r for r in with_id(worker_lines, reply["event_id"]) if "succeeded" in r["message"]]
        assert done, worker_lines[-5:]
        assert done[0]["conversation_id"] == conversation
        assert done[0]["task"] == "tavus.events.process"
    assert any("beat: Starting" in r["message"] for r in beat_lines)
    for log in (web, worker, beat):
        assert TOKEN not in log.log_path.read_text(), log.log_path.name


def test_a_json_line_is_redacted_as_the_text_line() -> None:
    """One record, both formats: the same redacted message and traceback."""
    redactor = RedactingFilter((TOKEN,))
    try:
        raise ValueError(f"bad /callbacks/{TOKEN} from redis://user:hunter22@host")
    except ValueError:
        record = logging.LogRecord(
            "receiver", logging.ERROR, __file__, 1, "posted to %s", (f"/callbacks/{TOKEN}",), None
        )
        record.exc_info = __import__("sys").exc_info()
    assert redactor.filter(record)
    line = json.loads(JsonFormatter().format(record))
    text = logging.Formatter("%(message)s").format(record)
    assert line["message"] == "posted to /callbacks/[redacted]" == text.splitlines()[0]
    assert "bad /callbacks/[redacted] from redis://user:[redacted]@host" in line["error"]
    assert line["error"] in text
    assert TOKEN not in json.dumps(line) and "hunter22" not in json.dumps(line)
    assert line["trace_id"] is None  # left for OpenTelemetry's logging instrumentation


def test_trace_ids_come_from_opentelemetrys_record_attributes() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.otelTraceID, record.otelSpanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    line = json.loads(JsonFormatter().format(record))
    assert (line["trace_id"], line["span_id"]) == (record.otelTraceID, record.otelSpanID)
    record.otelTraceID = "0"  # OpenTelemetry's "no span"
    assert json.loads(JsonFormatter().format(record))["trace_id"] is None


def test_task_arguments_name_the_ids_they_carry() -> None:
    message = {"event_id": "e1", "conversation_id": "c1", "kind": "conversation"}
    assert ids_of("tavus.events.process", [message]) == {"event_id": "e1", "conversation_id": "c1"}
    assert ids_of("tavus.forward.deliver", ["e2", "app"]) == {"event_id": "e2"}
    assert ids_of("tavus.storage.verify_recording", ["c3"]) == {"conversation_id": "c3"}
    assert ids_of("tavus.alerts.deliver", ["cause", "slack"]) == {}


def test_log_format_is_text_or_json() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"LOG_FORMAT": "xml"})
    assert "LOG_FORMAT" in str(refused.value)
