"""Forwarding and hooks end to end: the receiver, a real Celery worker on every queue, the store,
real HTTP destinations (a sink checking each request with the `standardwebhooks` reference
library, and the seed's own sample server run from shared/seed), hooks in a temporary module."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis

from cli import simulate
from receiver import create_app
from receiver.publisher import Publisher
from schemas.settings import Settings
from tests.helpers import API_KEY, TOKEN, FakeTavus, ended, worker_env
from tests.services import ROOT, Service, Worker, free_port, wait_until
from tests.sinks import HttpSink, verified
from workers import queries, reconciliation
from workers.store.db import Store
from workers.tavus_api import TavusAPI

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
# shared/ lies beside the checkout (as CI lays it out)
SEED = Path(os.environ.get("TAVUS_SEED_DIR", ROOT.parent / "shared" / "seed"))
ALL_QUEUES = "events,storage,alerts,forward,hooks"


def settings_for(redis_url: str, sqlite_url: str) -> Settings:
    return Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url)


def start_worker(settings: Settings, log: Path, **env: str) -> Worker:
    return Worker(worker_env(settings, **env), log, queues=ALL_QUEUES).start()


def post_every_scenario(client, repeat: int = 2) -> list[bytes]:
    """Every simulated callback, each posted ``repeat`` times (Tavus's repeats); those accepted."""
    accepted = []
    for name in simulate.SCENARIOS:
        for body in simulate.scenario(name):
            raw = orjson.dumps(body)
            for _ in range(repeat):
                answer = client.post(
                    f"/callbacks/{TOKEN}", data=raw, content_type="application/json"
                )
                assert answer.status_code in (200, 202), answer.json
                if answer.json["status"] == "accepted":
                    accepted.append(raw)
    return accepted


def deliveries(store: Store, **filters) -> list[dict]:
    with store.session() as session:
        return queries.list_deliveries(session, limit=10_000, **filters)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_every_simulated_event_reaches_the_sink_once_signed_and_byte_for_byte(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    sink = HttpSink().start()
    settings = settings_for(redis_url, sqlite_url)
    worker = start_worker(
        settings, tmp_path / "worker.log",
        FORWARD_APP_URL=f"{sink.url}/tavus/webhook", FORWARD_APP_SECRET=SECRET,
    )  # fmt: skip
    try:
        accepted = post_every_scenario(create_app(settings).test_client())
        assert len(accepted) > 15
        wait_until(lambda: len(sink.received) >= len(accepted), timeout=60)
        wait_until(
            lambda: (
                all(d["status"] == "delivered" for d in deliveries(store))
                and len(deliveries(store)) == len(accepted)
            ),
            timeout=30,
        )
        time.sleep(1)  # anything sent twice would have arrived by now
        received = verified(sink.received, SECRET)
        assert sorted(r.body for r in received) == sorted(accepted)  # once each, byte for byte
        assert len({r.headers["webhook-id"] for r in received}) == len(accepted)
        kinds = Counter(r.headers["tavus-event-kind"] for r in received)
        assert set(kinds) == {"conversation", "guardrail", "objective", "replica", "video",
                              "document"}  # fmt: skip
        joined = [r for r in received if b"_joined" in r.body]
        assert len(joined) == 2  # pal_joined and replica_joined: two events, each once
        assert {r.headers["tavus-event-source"] for r in received} == {"callback"}
    finally:
        worker.stop()
        sink.stop()
        store.dispose()
    assert SECRET not in worker.output()


class SampleServer(Service):
    """The seed's sample Flask server, run from shared/seed as its page says, on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.port = free_port()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "flask", "--app", str(SEED / "sample_server.py"), "run",
                "--port", str(self.port)]  # fmt: skip

    def ready(self, new_output: bytes) -> bool:
        return b"Running on" in new_output


@pytest.mark.skipif(not (SEED / "sample_server.py").exists(), reason="shared/seed not here")
def test_the_seeds_sample_server_behind_the_forwarder_gets_a_conversation_once(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    server = SampleServer({**os.environ, "PYTHONUNBUFFERED": "1"}, tmp_path / "seed.log").start()
    settings = settings_for(redis_url, sqlite_url)
    worker = start_worker(
        settings, tmp_path / "worker.log",
        FORWARD_APP_URL=f"http://127.0.0.1:{server.port}/webhook", FORWARD_APP_SECRET=SECRET,
        FORWARD_APP_EVENTS="conversation",
    )  # fmt: skip
    try:
        client = create_app(settings).test_client()
        bodies = simulate.conversation_lifecycle("c-seed")
        expected = [b for b in bodies if "webhook_url" in b]  # the conversation events
        for body in bodies * 2:  # Tavus's repeats are removed before forwarding
            assert client.post(f"/callbacks/{TOKEN}", json=body).status_code in (200, 202)
        wait_until(lambda: server.output().count("Received callback:") >= len(expected), 60)
        wait_until(lambda: len(deliveries(store, destination="app")) == len(expected), 20)
        wait_until(lambda: {d["status"] for d in deliveries(store)} == {"delivered"}, 20)
        time.sleep(1)
        out = server.output()
        for body in expected:
            line = f"Received callback: {body['event_type']} for conversation c-seed"
            assert out.count(line) == 1, line
        assert out.count("Transcript is ready!") == 1
        assert "- Total messages: 13" in out  # its analyze_conversation ran on our transcript
    finally:
        worker.stop()
        server.stop()
        store.dispose()


HOOKS = """
import pathlib
import time

from workers.hooks import on

STATE = pathlib.Path(__file__).with_name("state")


def note(name, event):
    with (STATE / name).open("a") as seen:
        seen.write(f"{event.id} {event.kind} {event.event_type} {event.source}\\n")


@on("application.transcription_ready")
def flaky(event):
    note("flaky", event)
    if len((STATE / "flaky").read_text().splitlines()) <= 2:
        raise RuntimeError("flaky failure")
    transcript = event.body["properties"]["transcript"]
    (STATE / "analyzed").write_text(f"{event.conversation_id} {len(transcript)}")


@on("system.shutdown", "objective")
def always_fails(event):
    note("always_fails", event)
    raise ValueError("always broken")


@on("application.recording_ready")
def hangs(event):
    note("hangs", event)
    time.sleep(3600)


@on("*")
def every_event(event):
    note("every_event", event)
"""


def test_hooks_run_once_retry_fail_and_time_out_each_on_its_own(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    package = tmp_path / "hooks_pkg"
    (package / "state").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tavus_hooks.py").write_text(textwrap.dedent(HOOKS))
    state = package / "state"
    store = Store(sqlite_url)
    store.upgrade()
    settings = settings_for(redis_url, sqlite_url)
    env = {"TAVUS_HOOKS": "hooks_pkg.tavus_hooks", "HOOK_MAX_ATTEMPTS": "3",
           "HOOK_TIMEOUT_SECONDS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}  # fmt: skip
    worker = start_worker(settings, tmp_path / "worker.log", **env)
    try:
        bodies = simulate.conversation_lifecycle("c-hooks")
        client = create_app(settings).test_client()
        for body in bodies:
            assert client.post(f"/callbacks/{TOKEN}", json=body).status_code == 202

        def lines(name: str) -> list[str]:
            path = state / name
            return path.read_text().splitlines() if path.exists() else []

        wait_until(lambda: (state / "analyzed").exists(), timeout=60)
        wait_until(lambda: len(deliveries(store, failed=True)) == 3, timeout=60)
        assert (state / "analyzed").read_text() == "c-hooks 13"
        assert len(lines("flaky")) == 3  # failed twice, then succeeded, and not run again
        assert len(lines("always_fails")) == 6  # shutdown and objective, 3 attempts each
        assert len(lines("hangs")) == 3
        seen = lines("every_event")
        assert len(seen) == len(bodies) == len(set(seen))  # once per event, whatever failed
        by_hook = {d["destination"]: d for d in deliveries(store)}
        flaky = by_hook["hook:hooks_pkg.tavus_hooks.flaky"]
        assert flaky["status"] == "delivered"
        assert [a["outcome"] for a in flaky["history"]] == ["retrying", "retrying", "delivered"]
        hung = by_hook["hook:hooks_pkg.tavus_hooks.hangs"]
        assert hung["status"] == "failed"
        assert "still running after HOOK_TIMEOUT_SECONDS (1s)" in hung["last_error"]
        assert all(a["latency_ms"] < 5000 for a in hung["history"])

        # Listed by the CLI, and redelivered by it.
        cli_env = worker_env(settings, **env)
        listed = cli(cli_env, "deliveries", "--failed", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {d["type"] for d in json.loads(listed.stdout)} == {"hook"}
        assert {d["destination"] for d in json.loads(listed.stdout)} == {
            "hook:hooks_pkg.tavus_hooks.always_fails",
            "hook:hooks_pkg.tavus_hooks.hangs",
        }
        text = cli(cli_env, "deliveries", "--destination", "hook:hooks_pkg.tavus_hooks.flaky")
        assert "delivered" in text.stdout and "application.transcription_ready" in text.stdout
        again = cli(cli_env, "redeliver", "--failed")
        assert again.returncode == 0 and "redelivering 3 deliveries" in again.stdout, again
        wait_until(lambda: len(lines("always_fails")) == 12, timeout=60)
        wait_until(lambda: len(deliveries(store, failed=True)) == 3, timeout=60)
        assert len(lines("flaky")) == 3 and len(lines("every_event")) == len(bodies)
    finally:
        worker.stop()
        store.dispose()


STUBBORN_HOOK = """
import pathlib
import time

from workers.hooks import on

STATE = pathlib.Path(__file__).with_name("state")


@on("application.transcription_ready")
def stubborn(event):
    with (STATE / "stubborn").open("a") as seen:
        seen.write(f"{event.id}\\n")
    if len((STATE / "stubborn").read_text().splitlines()) == 1:
        while True:  # deaf to HOOK_TIMEOUT_SECONDS: only the task's hard time limit stops it
            try:
                time.sleep(3600)
            except BaseException:
                pass
"""


def test_a_hook_stopped_by_the_hard_time_limit_is_retried_after_its_lease(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    """The pool process is killed mid-hook and no answer is recorded: the delivery must not stay
    ``sending`` until someone runs ``redeliver``, but run again once its lease is over."""
    package = tmp_path / "stubborn_pkg"
    (package / "state").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tavus_hooks.py").write_text(textwrap.dedent(STUBBORN_HOOK))
    store = Store(sqlite_url)
    store.upgrade()
    settings = settings_for(redis_url, sqlite_url)
    env = {"TAVUS_HOOKS": "stubborn_pkg.tavus_hooks", "HOOK_TIMEOUT_SECONDS": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}  # fmt: skip
    worker = start_worker(settings, tmp_path / "worker.log", **env)
    try:
        client = create_app(settings).test_client()
        for body in simulate.conversation_lifecycle("c-stubborn"):
            assert client.post(f"/callbacks/{TOKEN}", json=body).status_code == 202
        hook = "hook:stubborn_pkg.tavus_hooks.stubborn"
        wait_until(
            lambda: [d["status"] for d in deliveries(store, destination=hook)] == ["delivered"],
            timeout=150,
        )
        [delivered] = deliveries(store, destination=hook)
        assert [a["outcome"] for a in delivered["history"]] == ["lost", "delivered"]
        assert len((package / "state" / "stubborn").read_text().splitlines()) == 2
        assert "Hard time limit" in worker.output()
    finally:
        worker.stop()
        store.dispose()


def test_a_hook_module_that_fails_to_import_stops_the_worker(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broken_hooks.py").write_text("from workers.hooks import on\nimport no_such_lib\n")
    settings = settings_for(redis_url, sqlite_url)
    env = {"TAVUS_HOOKS": "broken_hooks", "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    worker = Worker(worker_env(settings, **env), tmp_path / "worker.log", queues=ALL_QUEUES)
    with pytest.raises(RuntimeError, match="died at start"):
        worker.start()
    assert worker.process.wait(timeout=10) != 0
    assert (
        "worker not started: TAVUS_HOOKS: cannot import 'broken_hooks': "
        "ModuleNotFoundError: No module named 'no_such_lib'" in worker.output()
    )
    assert "Traceback" not in worker.output()


def test_reconciled_events_are_forwarded_marked_reconciled(
    redis_url: str,
    sqlite_url: str,
    tavus: FakeTavus,
    tmp_path: Path,
) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    sink = HttpSink().start()
    settings = settings_for(redis_url, sqlite_url)
    worker = start_worker(
        settings, tmp_path / "worker.log",
        FORWARD_APP_URL=sink.url, FORWARD_APP_SECRET=SECRET,
        FORWARD_APP_EVENTS="application.transcription_ready",
    )  # fmt: skip
    try:
        # Tavus never sent this conversation's transcript; its API holds it.
        ended(store, "c-missed", datetime.now(UTC) - timedelta(hours=1))
        tavus.holds("c-missed", simulate.conversation_lifecycle("c-missed"))
        publisher = Publisher(redis.Redis.from_url(redis_url), 3600)  # as the receiver does
        api = TavusAPI(tavus.url, API_KEY)
        try:
            report = reconciliation.run(
                store, api,
                publisher.publish,
                settings.with_overrides(tavus_api_key=API_KEY, tavus_api_url=tavus.url,
                                        reconcile_grace_seconds=60),
            )  # fmt: skip
        finally:
            api.close()
        assert report.fed > 0
        wait_until(lambda: sink.received, timeout=60)
        time.sleep(1)
        [request] = verified(sink.received, SECRET)
        assert request.headers["tavus-event-source"] == "reconciled"
        assert request.headers["tavus-event-type"] == "application.transcription_ready"
        assert len(request.json()["properties"]["transcript"]) == 13
    finally:
        worker.stop()
        sink.stop()
        store.dispose()
