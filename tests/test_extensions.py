"""The recipes of docs/architecture.md, proven: a toy alert channel, storage provider and
callback kind, each one module of ``tests/extensions/`` named in TAVUS_EXTENSIONS, as a user's
package would be, run end to end by a real receiver, a real Celery worker and a real store, and
shown by the CLI and the API with no edit of theirs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from console.app import create_app as create_console
from receiver import create_app as create_receiver
from schemas.callbacks import KIND_TABLE, SCHEMAS_BY_KIND
from schemas.settings import Settings
from tests.console_fixtures import API_TOKEN, BEARER
from tests.helpers import TOKEN, fixture, fixture_json, worker_env
from tests.services import Worker, base_env, wait_until
from workers.alerts.notifiers import NOTIFIERS
from workers.storage.verifiers import PROVIDERS
from workers.store.db import Store

pytestmark = pytest.mark.integration


class Stack:
    """The receiver and the console in this process, a worker beside it, all given ``modules``
    in TAVUS_EXTENSIONS (and ``env``, the worker's other settings)."""

    def __init__(
        self, redis_url: str, store: Store, tmp_path: Path, modules: str, **env: str
    ) -> None:
        self.store = store
        self.settings = Settings(
            callback_tokens=(TOKEN,),
            redis_url=redis_url,
            database_url=store.url,
            spool_dir=str(tmp_path / "spool"),
            api_tokens=(API_TOKEN,),
            tavus_extensions=tuple(modules.split(",")),
        )
        self.env = worker_env(self.settings, TAVUS_EXTENSIONS=modules, **env)
        self.worker = Worker(self.env, tmp_path / "worker.log").start()
        self.receiver = create_receiver(self.settings).test_client()
        self.api = create_console(self.settings).test_client()

    def post(self, body: bytes | dict, path: str = f"/callbacks/{TOKEN}") -> dict:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        response = self.receiver.post(path, data=data, content_type="application/json")
        assert response.status_code == 202, response.json
        return response.json

    def get(self, path: str) -> dict:
        """The API's answer; {} while what it names is not stored yet (404)."""
        response = self.api.get(f"/api/v1{path}", headers=BEARER)
        assert response.status_code in (200, 404), response.json
        return response.json if response.status_code == 200 else {}

    def cli(self, *args: str) -> str:
        env = base_env(DATABASE_URL=self.store.url, TAVUS_EXTENSIONS=self.env["TAVUS_EXTENSIONS"])
        command = [sys.executable, "-m", "cli.main", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        self.worker.stop()


REGISTRIES = (KIND_TABLE, SCHEMAS_BY_KIND, NOTIFIERS, PROVIDERS)


@pytest.fixture
def stacks(redis_url: str, store: Store, tmp_path: Path) -> Iterator[list[Stack]]:
    """The stacks a test starts, stopped after it; and this process's registries as they were
    (the receiver and the console here registered the toys, which no other test expects)."""
    saved = [dict(registry) for registry in REGISTRIES]
    started: list[Stack] = []
    yield started
    for stack in started:
        stack.stop()
    for registry, before in zip(REGISTRIES, saved, strict=True):
        registry.clear()
        registry.update(before)
    for module in [name for name in sys.modules if name.startswith("tests.extensions.")]:
        del sys.modules[module]


def test_a_toy_alert_channel_gets_a_guardrail_alert(stacks, redis_url, store, tmp_path) -> None:
    out = tmp_path / "alerts.jsonl"
    stack = Stack(
        redis_url,
        store,
        tmp_path,
        "tests.extensions.file_channel",
        ALERT_ROUTES="warning:toy_file",
        TOY_ALERT_FILE=str(out),
    )
    stacks.append(stack)
    stack.post(fixture("guardrail"))

    wait_until(lambda: out.is_file() and out.read_bytes().endswith(b"\n"), timeout=30)
    [alert] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert alert["cause_key"].startswith("guardrail:") and alert["severity"] == "warning"

    def delivered() -> dict:
        [listed] = json.loads(stack.cli("alerts", "--json"))
        return {d["channel"]: d["status"] for d in listed["deliveries"]}

    wait_until(lambda: delivered() == {"log": "delivered", "toy_file": "delivered"}, timeout=30)
    assert "toy_file" in stack.cli("alerts")
    [api_alert] = stack.get("/alerts")["data"]
    assert api_alert["cause_key"] == alert["cause_key"]
    assert {d["channel"] for d in api_alert["deliveries"]} == {"log", "toy_file"}


def config_check(**env: str) -> subprocess.CompletedProcess:
    """``tavus-callbacks config check``: what a worker checks at start (``workers.extensions``)."""
    command = [sys.executable, "-m", "cli.main", "config", "check"]
    environ = base_env(REDIS_URL="redis://127.0.0.1:1", **env)
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60)


def test_settings_naming_what_no_extension_registered_are_refused_at_start() -> None:
    refused = config_check(ALERT_ROUTES="warning:toy_file")
    assert "ALERT_ROUTES: unknown channel 'toy_file'" in refused.stderr
    refused = config_check(RECORDING_LOCATIONS="folder:recordings")
    assert "RECORDING_LOCATIONS entry 'folder:recordings': unknown provider" in refused.stderr
    refused = config_check(TAVUS_EXTENSIONS="tests.extensions.nowhere")
    assert "TAVUS_EXTENSIONS: cannot import 'tests.extensions.nowhere'" in refused.stderr
    modules = "tests.extensions.file_channel,tests.extensions.folder_storage"
    valid = config_check(
        TAVUS_EXTENSIONS=modules,
        ALERT_ROUTES="warning:toy_file",
        RECORDING_LOCATIONS="folder:recordings",
    )
    assert valid.returncode == 0, valid.stderr


def recording_ready(conversation_id: str, provider: str, uri: str) -> dict:
    return fixture_json("recording_ready_s3") | {
        "conversation_id": conversation_id,
        "properties": {"storage_provider": provider, "storage_uri": uri, "duration": 12},
    }


def test_a_toy_storage_provider_verifies_a_recording(stacks, redis_url, store, tmp_path) -> None:
    root = tmp_path / "storage"
    (root / "recordings").mkdir(parents=True)
    (root / "recordings" / "c-toy.mp4").write_bytes(b"\0" * 4096)
    stack = Stack(
        redis_url,
        store,
        tmp_path,
        "tests.extensions.folder_storage",
        RECORDING_LOCATIONS="folder:recordings",
        TOY_STORAGE_ROOT=str(root),
        RECORDING_WAIT_SECONDS="2",
    )
    stacks.append(stack)
    stack.post(recording_ready("c-toy", "folder", "file://recordings/c-toy.mp4"))
    stack.post(recording_ready("c-gone", "folder", "file://recordings/c-gone.mp4"))
    stack.post(recording_ready("c-unlisted", "folder", "file://elsewhere/c-toy.mp4"))

    def verification(conversation_id: str) -> dict:
        recording = stack.get(f"/conversations/{conversation_id}").get("recording")
        return (recording or {}).get("verification") or {}

    final = ("verified", "missing", "refused")
    for conversation_id in ("c-toy", "c-gone", "c-unlisted"):
        wait_until(lambda c=conversation_id: verification(c).get("status") in final, timeout=30)
    verified = verification("c-toy")
    assert (verified["status"], verified["size"]) == ("verified", 4096)
    assert verification("c-gone")["status"] == "missing"
    refused = verification("c-unlisted")
    assert refused["status"] == "refused"
    assert refused["reason"] == "folder:elsewhere is not listed in RECORDING_LOCATIONS"


def test_a_toy_callback_kind_is_classified_stored_handled_and_listed(
    stacks, redis_url, store, tmp_path
) -> None:
    stack = Stack(redis_url, store, tmp_path, "tests.extensions.survey_kind")
    stacks.append(stack)
    survey = {"survey_id": "s-1", "score": 9, "conversation_id": "c-surveyed"}
    accepted = stack.post(survey)
    repeat = stack.receiver.post(f"/callbacks/{TOKEN}", json=survey)
    assert (repeat.status_code, repeat.json["status"]) == (200, "duplicate")  # its own key
    refused = stack.receiver.post(f"/callbacks/{TOKEN}?kind=survey", json={"score": 1})
    assert refused.status_code == 422 and "survey_id" in json.dumps(refused.json)

    def listed() -> list[dict]:
        return stack.get("/events?kind=survey").get("data", [])

    # The refused body is kept too, quarantined, as any kind's would be.
    statuses = ["processed", "quarantined"]
    wait_until(lambda: sorted(e["status"] for e in listed()) == statuses, timeout=30)
    [event] = [e for e in listed() if e["status"] == "processed"]
    assert (event["event_id"], event["kind"]) == (accepted["event_id"], "survey")
    assert stack.get("/conversations/c-surveyed")["conversation_id"] == "c-surveyed"
    listed_by_cli = json.loads(stack.cli("events", "--kind", "survey", "--json"))
    assert accepted["event_id"] in [e["event_id"] for e in listed_by_cli]
    assert stack.api.get("/api/v1/events?kind=nosuch", headers=BEARER).status_code == 422
