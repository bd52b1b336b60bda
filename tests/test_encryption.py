"""Encryption at rest (ENCRYPTION_KEYS): content is never in plain text in the store (its
write-ahead log included), Redis (its append-only file included) or the spool, while every
read, forwarding included, gets it back byte for byte; keys rotate; a missing key says which."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import select

from cli import transfer as cli_transfer
from console.app import create_app as create_console
from receiver import create_app
from receiver.publisher import Publisher
from schemas import crypto
from schemas.classify import classify
from schemas.messages import event_message
from schemas.settings import Settings, SettingsError
from tests.console_fixtures import BEARER, console_settings, sign_in
from tests.helpers import (
    TOKEN,
    conversation_bodies,
    found_in_files,
    found_in_redis,
    queued,
    spooling_settings,
    worker_env,
)
from tests.services import ROOT, RedisServer, Worker, base_env, wait_until
from tests.sinks import HttpSink
from workers import keys, processing, transfer
from workers.store.db import Store
from workers.store.models import Alert, AuditEntry, Conversation, Event, GuardrailTrigger, Objective

ALL_QUEUES = "events,storage,alerts,forward,hooks"
SECRET = "whsec_" + "ZW5jcnlwdGlvbi10ZXN0LXNlY3JldC0wMTIzNDU2Nzg5"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def process(store: Store, body: dict[str, Any], cipher: crypto.Cipher | None) -> str:
    """One callback through the worker's steps, as it arrives from the queue."""
    raw = orjson.dumps(body)
    message = event_message(classify(body, raw), raw, time.time(), "callback", cipher=cipher)
    plain = {**message, "body": crypto.opened(cipher, message["body"])}
    return processing.process(store, plain, lambda *_: None, max_attempts=3).event_id


# --- the keys themselves -----------------------------------------------------------------------


def test_the_first_key_seals_every_key_opens_and_a_missing_one_is_named() -> None:
    old, new = crypto.generate_key(), crypto.generate_key()
    sealed = crypto.Cipher([old]).seal("I am Marker")
    assert "Marker" not in sealed and sealed.startswith(f"fernet:{crypto.key_id(old)}:")
    assert crypto.Cipher([new, old]).open(sealed) == "I am Marker"
    assert crypto.opened(None, "not sealed") == "not sealed"
    with pytest.raises(crypto.MissingKey) as missing:
        crypto.Cipher([new]).open(sealed)
    assert crypto.key_id(old) in str(missing.value) and old not in str(missing.value)
    with pytest.raises(crypto.MissingKey, match="ENCRYPTION_KEYS is not set"):
        crypto.opened(None, sealed)


def test_a_bad_key_is_refused_at_boot_by_position_never_by_value() -> None:
    good = crypto.generate_key()
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"ENCRYPTION_KEYS": f"{good},not-a-key-at-all"})
    assert "entry 2" in str(refused.value) and "not-a-key-at-all" not in str(refused.value)
    settings = Settings.from_env({"ENCRYPTION_KEYS": good})
    assert settings.cipher is settings.cipher  # built once
    assert good in settings.secrets() and good not in repr(settings)


def test_keys_generate_prints_a_key_that_works(tmp_path: Path) -> None:
    made = cli(base_env(DATABASE_URL=f"sqlite:///{tmp_path / 'e.db'}"), "keys", "generate")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert crypto.is_key(key)
    other = crypto.generate_key()
    env = base_env(DATABASE_URL=f"sqlite:///{tmp_path / 'e.db'}", ENCRYPTION_KEYS=f"{key},{other}")
    listed = cli(env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert crypto.key_id(key) in lines[-2] and "encrypts" in lines[-2]
    assert crypto.key_id(other) in lines[-1] and key not in listed.stdout


# --- the store ---------------------------------------------------------------------------------


def test_turned_on_later_rotate_keys_seals_what_was_plain_and_the_search_index_forgets_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    marker = f"Marker{uuid.uuid4().hex}"
    plain = Store(sqlite_url)
    plain.upgrade()
    for body in conversation_bodies("c-before", marker):
        process(plain, body, None)
    plain.dispose()
    files = list(tmp_path.glob("events.db*"))
    assert any(found_in_files(path, marker.encode()) for path in files)  # honest: it was there

    key = crypto.generate_key()
    sealed = Store(sqlite_url, crypto.Cipher([key]))
    rewritten = keys.rotate(sealed)
    assert rewritten["events"] == 4 and rewritten["conversations"] == 1
    assert keys.rotate(sealed).total() == 0  # done: nothing left under another key
    files = list(tmp_path.glob("events.db*"))
    assert [hit for path in files for hit in found_in_files(path, marker.encode())] == []
    with sealed.session() as session:
        convo = session.get(Conversation, "c-before")
        assert convo.transcript == [{"role": "user", "content": f"I am {marker}"}]
        assert marker in convo.perception_analysis
        assert session.scalar(select(Objective.output_variables)) == {"name": marker}
        assert session.scalar(select(GuardrailTrigger.guardrail)) == f"no_{marker}"
    sealed.dispose()


def test_postgresql_holds_sealed_content_and_rotates_it(postgres_url: str) -> None:
    old, new = crypto.generate_key(), crypto.generate_key()
    marker = "M" * 300  # a guardrail's name, sealed, is longer than an id column allows
    store = Store(postgres_url, crypto.Cipher([old]))
    store.upgrade()
    for body in conversation_bodies("c-pg", marker):
        process(store, body, store.cipher)
    with store.begin() as connection:
        stored = connection.exec_driver_sql(
            "SELECT c.transcript::text, g.guardrail, e.body FROM conversations c "
            "JOIN guardrail_triggers g USING (conversation_id) JOIN events e ON e.id = g.event_id"
        ).one()
        lines = connection.exec_driver_sql("SELECT count(*) FROM transcript_lines").scalar()
    assert all(marker not in value and "fernet:" in value for value in stored) and lines == 0
    store.dispose()
    rotated = Store(postgres_url, crypto.Cipher([new, old]))
    assert keys.rotate(rotated).total() >= 5
    rotated.dispose()
    store = Store(postgres_url, crypto.Cipher([new]))
    with store.session() as session:
        assert session.scalar(select(GuardrailTrigger.guardrail)) == f"no_{marker}"
        assert session.get(Conversation, "c-pg").transcript[0]["content"] == f"I am {marker}"
    store.dispose()


# --- search is off, and says so ----------------------------------------------------------------


def test_search_is_off_while_encrypted_and_says_so_everywhere(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    key = crypto.generate_key()
    settings = console_settings(redis_url, sqlite_url, tmp_path, encryption_keys=(key,))
    store = Store(sqlite_url, settings.cipher)
    store.upgrade()
    process(store, conversation_bodies("c-search", "Marker")[0], settings.cipher)
    with store.begin() as connection:
        indexed = connection.exec_driver_sql("SELECT count(*) FROM transcript_lines").scalar()
    assert indexed == 0

    client = create_console(settings).test_client()
    answer = client.get("/api/v1/conversations?q=Marker", headers=BEARER)
    assert answer.status_code == 409
    assert answer.json["error"] == "search_off" and "ENCRYPTION_KEYS" in answer.json["message"]
    assert client.get("/api/v1/conversations", headers=BEARER).status_code == 200
    sign_in(client)
    page = client.get("/console/conversations?q=Marker")
    assert page.status_code == 200
    assert b"transcript search is off while ENCRYPTION_KEYS is set" in page.data

    env = worker_env(settings, ENCRYPTION_KEYS=key)
    said = cli(env, "conversations", "--search", "Marker")
    assert said.returncode == 1 and "Traceback" not in said.stderr
    assert "transcript search is off while ENCRYPTION_KEYS is set" in said.stderr
    store.dispose()


def test_the_api_names_a_missing_key_in_json(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    old, new = crypto.generate_key(), crypto.generate_key()
    store = Store(sqlite_url, crypto.Cipher([old]))
    store.upgrade()
    process(store, conversation_bodies("c-lost", "Marker")[1], store.cipher)
    store.dispose()
    settings = console_settings(redis_url, sqlite_url, tmp_path, encryption_keys=(new,))
    client = create_console(settings).test_client()
    answer = client.get("/api/v1/conversations/c-lost", headers=BEARER)
    assert answer.status_code == 500 and answer.json["error"] == "encryption_key_missing"
    assert f"encrypted with key {crypto.key_id(old)}" in answer.json["message"]
    assert "Marker" not in answer.get_data(as_text=True)


def test_export_gives_bodies_back_as_sent_and_import_queues_them_sealed(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    key = crypto.generate_key()
    settings = spooling_settings(redis_url, sqlite_url, tmp_path / "spool", encryption_keys=(key,))
    store = Store(sqlite_url, settings.cipher)
    store.upgrade()
    bodies = conversation_bodies("c-x", "Marker")
    raws = [orjson.dumps(body, option=orjson.OPT_INDENT_2) for body in bodies]
    for raw in raws:
        message = event_message(classify(orjson.loads(raw), raw), raw, time.time(), "callback")
        processing.process(store, message, lambda *_: None, max_attempts=3)
    exported = [transfer.line(event) for event in transfer.events(store, transfer.Selection())]
    assert sorted(orjson.loads(line)["body"].encode() for line in exported) == sorted(raws)

    client = redis.Redis.from_url(redis_url)
    publisher = Publisher(client, 60, cipher=settings.cipher)
    other = Store(f"sqlite:///{tmp_path / 'other.db'}", settings.cipher)
    other.upgrade()
    report = cli_transfer.ImportReport()
    cli_transfer.import_lines(exported, other, client, publisher, report)
    other.dispose()
    assert report.queued == 4
    waiting = queued(client)
    assert len(waiting) == 4 and all(m["body"].startswith("fernet:") for m in waiting)
    assert found_in_redis(client, b"Marker") == []
    store.dispose()


# --- every byte, with real parts ---------------------------------------------------------------


class Watch:
    """Looks for ``marker`` in every place content may rest, again and again, until stopped."""

    def __init__(self, marker: bytes, client: redis.Redis, places: list[Path]) -> None:
        self.marker, self.client, self.places = marker, client, places
        self.found: list[str] = []
        self.looks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def look(self) -> list[str]:
        hits = [f"redis key {key}" for key in found_in_redis(self.client, self.marker)]
        for place in self.places:
            if place.exists():
                try:
                    hits += found_in_files(place, self.marker)
                except FileNotFoundError:  # a temporary file went between listing and reading
                    continue
        self.looks += 1
        return hits

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        return self.found

    def _run(self) -> None:
        while not self._stop.is_set():
            self.found += self.look()
            self._stop.wait(0.1)


@pytest.mark.integration
def test_no_plain_content_at_rest_while_forwarded_bodies_stay_byte_for_byte_and_keys_rotate(
    sqlite_url: str, tmp_path: Path
) -> None:
    marker = f"Marker{uuid.uuid4().hex}"
    old, new = crypto.generate_key(), crypto.generate_key()
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = redis.Redis.from_url(server.url)
    Store(sqlite_url).upgrade()
    spool_dir = tmp_path / "spool"
    # The spool is drained below, by hand.
    settings = spooling_settings(server.url, sqlite_url, spool_dir, encryption_keys=(old,))
    sink = HttpSink().start()
    env = worker_env(
        settings,
        ENCRYPTION_KEYS=old,
        FORWARD_SINK_URL=f"{sink.url}/hook",
        FORWARD_SINK_SECRET=SECRET,
    )
    app = create_app(settings)
    receiver, intake = app.test_client(), app.extensions["intake"]
    # As Tavus may send them: indented, keys in its order. What is forwarded must be these bytes.
    bodies = conversation_bodies("c-enc", marker)
    raws = [orjson.dumps(body, option=orjson.OPT_INDENT_2) for body in bodies]
    watch = Watch(marker.encode(), client, [tmp_path / "redis", spool_dir, *_db_files(tmp_path)])
    worker = None
    try:
        watch.start()
        for raw in raws[:3]:  # queued in Redis: no worker runs yet
            answer = receiver.post(f"/callbacks/{TOKEN}", data=raw, content_type="application/json")
            assert answer.status_code == 202, answer.json
        intake.drainer.note_failure()  # Redis deemed down for a second: the next one is spooled
        answer = receiver.post(f"/callbacks/{TOKEN}", data=raws[3], content_type="application/json")
        assert answer.json["status"] == "spooled"
        waiting = queued(client)
        spooled = [orjson.loads(p.read_bytes()) for p in spool_dir.glob("*.event")]
        assert len(waiting) == 3 and len(spooled) == 1  # honest: they are there, sealed
        assert all(m["body"].startswith("fernet:") for m in [*waiting, *spooled])
        assert intake.drainer.drain_once().published == 1

        worker = Worker(env, tmp_path / "worker.log", queues=ALL_QUEUES).start()
        wait_until(lambda: len(sink.accepted()) == 4, timeout=90, interval=0.25)
        store = Store(sqlite_url, settings.cipher)
        wait_until(lambda: _alerts(store) == 1, timeout=30, interval=0.25)  # the guardrail's
        time.sleep(1)
        client.bgrewriteaof()
        wait_until(lambda: not client.info("persistence")["aof_rewrite_in_progress"], timeout=30)
        assert watch.stop() == [] and watch.looks > 10
        assert watch.look() == []
        assert sorted(r.body for r in sink.accepted()) == sorted(raws)  # byte for byte
        with store.session() as session:
            assert session.scalar(select(Alert.text)).count(marker) >= 1
            assert sorted(e.body.encode() for e in session.scalars(select(Event))) == sorted(raws)
        store.dispose()
        worker.stop()
        worker = None

        # Rotation: the new key first, the old one still there to read with; then the old one
        # removed, and everything reads.
        rotated = cli({**env, "ENCRYPTION_KEYS": f"{new},{old}"}, "rotate-keys")
        assert rotated.returncode == 0, rotated.stderr
        assert f"with key {crypto.key_id(new)}" in rotated.stdout
        shown = cli({**env, "ENCRYPTION_KEYS": new}, "conversation", "c-enc", "--json")
        assert shown.returncode == 0, shown.stderr
        record = orjson.loads(shown.stdout)
        assert marker in orjson.dumps(record).decode()
        events = cli({**env, "ENCRYPTION_KEYS": new}, "events", "--json")
        assert events.returncode == 0, events.stderr
        assert watch.look() == []

        # The old key alone: a clear error naming the key it lacks, no traceback, no garbage.
        lacking = cli({**env, "ENCRYPTION_KEYS": old}, "conversation", "c-enc", "--json")
        assert lacking.returncode == 1 and "Traceback" not in lacking.stderr
        assert f"encrypted with key {crypto.key_id(new)}" in lacking.stderr
        assert marker not in lacking.stdout + lacking.stderr
        with Store(sqlite_url).session() as session:
            trail = select(AuditEntry).where(AuditEntry.action == "rotate-keys")
            rotation = session.scalars(trail).one()
            assert rotation.outcome == "done" and rotation.detail["rows"] >= 9
    finally:
        watch.stop()
        if worker is not None:
            worker.stop()
        sink.stop()
        client.close()
        server.stop()


@pytest.mark.integration
def test_a_worker_without_the_key_names_it_and_keeps_the_event(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A body sealed with a key the worker lacks: dead-lettered at once (MAX_EVENT_ATTEMPTS=1),
    stored with its sealed body, the error naming the key; never lost, never garbage."""
    sender, worker_key = crypto.generate_key(), crypto.generate_key()
    settings = spooling_settings(
        redis_url, sqlite_url, tmp_path / "spool", encryption_keys=(sender,)
    )
    Store(sqlite_url).upgrade()
    raw = orjson.dumps(conversation_bodies("c-nokey", "Marker")[1])
    receiver = create_app(settings).test_client()
    assert (
        receiver.post(f"/callbacks/{TOKEN}", data=raw, content_type="application/json").status_code
        == 202
    )
    env = worker_env(settings, ENCRYPTION_KEYS=worker_key, MAX_EVENT_ATTEMPTS="1")
    worker = Worker(env, tmp_path / "worker.log", queues=ALL_QUEUES).start()
    store = Store(sqlite_url, crypto.Cipher([worker_key, sender]))  # to read what it stored
    said = f"encrypted with key {crypto.key_id(sender)}"
    worker_log = tmp_path / "worker.log"
    try:
        wait_until(lambda: _events(store) == 1, timeout=60, interval=0.25)
        wait_until(lambda: said in worker_log.read_text(), timeout=30, interval=0.25)
        log = worker_log.read_text()  # before the stop: SIGTERM may cut a later task short
    finally:
        worker.stop()
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert event.status == "failed" and crypto.key_id(sender) in event.last_error
        assert crypto.opened(store.cipher, event.body) == raw.decode()  # kept, sealed
    assert "Traceback" not in log
    store.dispose()


def _events(store: Store) -> int:
    with store.session() as session:
        return len(session.scalars(select(Event.id)).all())


def _db_files(tmp_path: Path) -> list[Path]:
    """The database, its write-ahead log and shared memory: present or to come."""
    return [tmp_path / f"events.db{suffix}" for suffix in ("", "-wal", "-shm")]


def _alerts(store: Store) -> int:
    with store.session() as session:
        return len(session.scalars(select(Alert.id)).all())
