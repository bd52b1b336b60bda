"""Export and import: the events of one deployment into another through the intake's door.

The move a user makes: the embedded SQLite, fed by a real receiver and Celery worker, exported
with the CLI and imported into PostgreSQL, where another real worker rebuilds the records. The
same events, statuses and records come out; importing twice doubles nothing; a bad line is
named by its number and the rest still goes in.
"""

from __future__ import annotations

import base64
import os
import pty
import select as io_select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update

from cli.simulate import conversation_lifecycle
from receiver import create_app
from schemas.settings import Settings
from tests.helpers import TOKEN, queued, worker_env
from tests.services import ROOT, Worker, base_env, wait_until
from tests.sinks import HttpSink
from workers import queries, transfer
from workers.store import audit
from workers.store.db import Store
from workers.store.models import Event, EventStatus

ALL_QUEUES = "events,storage,alerts,forward,hooks"
SECRET = "whsec_" + base64.b64encode(b"transfer-test-secret-0123456789").decode()


def cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, timeout=120,
    )  # fmt: skip


def stored(store: Store) -> dict[str, dict[str, Any]]:
    """Every event by id: what must survive the move."""
    with store.session() as session:
        return {
            e.id: {
                "kind": e.kind,
                "event_type": e.event_type,
                "event_key": e.event_key,
                "conversation_id": e.conversation_id,
                "received_at": e.received_at,
                "status": e.status,
                "body": e.body,
                "source": e.source,
            }
            for e in session.scalars(select(Event))
        }


def record(store: Store, conversation_id: str) -> dict[str, Any]:
    """The conversation's record as `conversation --json` shows it, less what is this
    deployment's own doing (when it verified the recording, which door an event came by)."""
    with store.session() as session:
        found = queries.conversation_record(session, conversation_id)
    assert found is not None
    found["recording"].pop("verification", None)
    for event in found["events"]:
        event.pop("source", None)
    return found


def settled(store: Store) -> bool:
    with store.session() as session:
        waiting = select(func.count()).select_from(Event).where(Event.status == "received")
        return session.scalar(waiting) == 0


@pytest.mark.integration
def test_a_move_from_sqlite_to_postgres_keeps_every_event_and_record_and_doubles_nothing(
    redis_url: str, sqlite_url: str, postgres_url: str, tmp_path: Path
) -> None:
    source = Store(sqlite_url)
    source.upgrade()
    target = Store(postgres_url)
    target.upgrade()
    old = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url)
    conversations = ["c-move-1", "c-move-2"]
    bodies = [b for c in conversations for b in conversation_lifecycle(c, turns=3)]
    bodies += [{"replica_id": "r-move", "status": "ready"}, {"no": "tavus shape"}]
    worker = Worker(worker_env(old), tmp_path / "old-worker.log").start()
    try:
        intake = create_app(old).test_client()
        for body in bodies:
            assert intake.post(f"/callbacks/{TOKEN}", json=body).status_code in (202, 422)
        wait_until(lambda: len(stored(source)) == len(bodies) and settled(source), timeout=60)
    finally:
        worker.stop()
    # One event was still waiting for its retry when the old deployment was stopped.
    before = stored(source)
    waiting = next(i for i, e in before.items() if e["event_type"] == "system.shutdown")
    with source.begin() as connection:
        connection.execute(
            update(Event).where(Event.id == waiting).values(status=EventStatus.RECEIVED)
        )
    before[waiting]["status"] = EventStatus.RECEIVED
    assert {e["status"] for e in before.values()} == {
        "processed", "quarantined", "received"
    }  # fmt: skip

    exported = cli(worker_env(old), "export")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert len(lines) == len(bodies) and exported.stderr == b""
    first = orjson.loads(lines[0])
    assert list(first) == list(transfer.FIELDS)
    assert {orjson.loads(line)["body"] for line in lines} == {e["body"] for e in before.values()}
    export_file = tmp_path / "events.jsonl"
    export_file.write_bytes(b"\n".join([*lines[:2], b'{"id": "no closing brace', *lines[2:]]))

    sink = HttpSink().start()
    new = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=postgres_url)
    env = worker_env(new, FORWARD_SINK_URL=f"{sink.url}/hook", FORWARD_SINK_SECRET=SECRET)
    # The same Redis: the old intake's claims on these events are still there.
    worker = Worker(env, tmp_path / "new-worker.log", queues=ALL_QUEUES).start()
    try:
        imported = cli(env, "import", str(export_file))
        assert imported.returncode == 1  # one line was bad: said, and the exit tells a script
        assert b"line 3: not JSON" in imported.stderr and b"Traceback" not in imported.stderr
        assert f"{len(bodies)} queued for the workers".encode() in imported.stdout
        wait_until(lambda: len(stored(target)) == len(bodies) and settled(target), timeout=90)

        after = stored(target)
        assert after.keys() == before.keys()
        for event_id, event in before.items():
            moved = after[event_id]
            assert moved.pop("source") == "import"
            expected = {**event, "source": None}
            expected.pop("source")
            if event_id == waiting:  # pending there, processed here: nothing lost
                assert moved.pop("status") == EventStatus.PROCESSED
                expected.pop("status")
            assert moved == expected, event["event_type"]
        for conversation_id in conversations:
            there = record(source, conversation_id)
            for event in there["events"]:
                if event["event_id"] == waiting:
                    event["status"] = EventStatus.PROCESSED
            assert there["transcript"] and there["perception_analysis"] and there["guardrails"]
            assert there["objectives"] and there["recording"]["uri"] and there["ended_at"]
            assert record(target, conversation_id) == there
        with target.session() as session:
            replica = queries.resource_record(session, "replica", "r-move")
        assert replica is not None and replica["status"] == "ready"

        # Handed on by the old deployment already: only the event it had not processed goes
        # to this one's destination.
        wait_until(lambda: len(sink.accepted()) == 1, timeout=30)
        time.sleep(2)
        assert [r.headers["webhook-id"] for r in sink.received] == [waiting]

        again = cli(env, "import", "-", stdin=b"\n".join(lines))
        assert again.returncode == 0, again.stderr
        assert f"0 queued for the workers, {len(bodies)} already stored".encode() in again.stdout
        time.sleep(2)
        assert len(stored(target)) == len(bodies) and len(sink.received) == 1
    finally:
        worker.stop()
        sink.stop()
    with source.session() as session:
        exports = [e for e in audit.entries(session) if e["action"] == "export"]
    assert exports[0]["actor"].startswith("cli:") and exports[0]["detail"]["events"] == len(bodies)
    with target.session() as session:
        imports = [(e["target"], e["outcome"], e["detail"]) for e in audit.entries(session)
                   if e["action"] == "import"]  # fmt: skip
    assert imports == [
        ("stdin", "done", {"queued": 0, "present": len(bodies), "duplicates": 0, "bad_lines": 0}),
        (f"file:{export_file}", "partial",
         {"queued": len(bodies), "present": 0, "duplicates": 0, "bad_lines": 1}),
    ]  # fmt: skip
    source.dispose()
    target.dispose()


def test_export_pages_by_keyset_and_filters(sqlite_store: Store, redis_url: str) -> None:
    """Events received at the same instant straddle a page boundary: none is lost or doubled."""
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url)
    with sqlite_store.begin() as connection:
        at = time.time()
        for n in range(7):
            connection.execute(
                Event.__table__.insert().values(
                    id=f"00000000-0000-4000-8000-00000000000{n}",
                    event_key=f"k{n}",
                    kind="replica" if n % 2 else "conversation",
                    conversation_id=None if n % 2 else "c-1",
                    source="callback",
                    received_at=transfer_time(at if n < 5 else at + n),
                    body=f'{{"n": {n}}}',
                    status="processed",
                    attempts=0,
                )
            )
    every = list(transfer.events(sqlite_store, transfer.Selection(), page_rows=2))
    assert [e["body"] for e in every] == [f'{{"n": {n}}}' for n in range(7)]
    only = transfer.Selection(kind="conversation", conversation_id="c-1")
    assert transfer.count(sqlite_store, only) == 4
    assert len(list(transfer.events(sqlite_store, only, page_rows=3))) == 4
    env = base_env(DATABASE_URL=sqlite_store.url, REDIS_URL=settings.redis_url)
    later = cli(env, "export", "--since", transfer_time(at + 1).strftime("%Y-%m-%d %H:%M:%S"))
    assert later.returncode == 0, later.stderr
    assert [orjson.loads(x)["body"] for x in later.stdout.splitlines()] == ['{"n": 5}', '{"n": 6}']
    unknown = cli(env, "export", "--kind", "hologram")
    assert unknown.returncode == 2 and b"'hologram' is not one of" in unknown.stderr
    # A person at a terminal sees a progress bar on stderr; the data on stdout is unchanged.
    terminal, seen_by_terminal = pty.openpty()
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "cli.main", "export"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=seen_by_terminal, timeout=120,
        )  # fmt: skip
        os.close(seen_by_terminal)
        assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 7
        screen = read_all(terminal)
        assert b"exporting" in screen and b"100%" in screen, screen
    finally:
        os.close(terminal)


def read_all(fd: int) -> bytes:
    """What a pseudo-terminal's other side wrote, until it is closed."""
    chunks = []
    while io_select.select([fd], [], [], 1)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # closed on the other side
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def transfer_time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_bad_lines_are_named_and_the_good_ones_still_go_in(
    sqlite_store: Store, redis_url: str, redis_client: Any
) -> None:
    good = {
        "id": "6f1b3c1e-8d4a-4f7e-9a51-0c2b7f9d1e23",
        "kind": "replica",
        "event_type": None,
        "source": "callback",
        "received_at": "2026-01-02T03:04:05+00:00",
        "status": "processed",
        "body": '{"replica_id": "r-good", "status": "ready"}',
    }
    lines = [
        orjson.dumps(good),
        b"[1, 2]",
        orjson.dumps({**good, "id": "not-a-uuid"}),
        orjson.dumps({**good, "body": "[]"}),
        b"",
        orjson.dumps({**good, "kind": "hologram"}),
        orjson.dumps({**good, "received_at": "yesterday"}),
        orjson.dumps({k: v for k, v in good.items() if k != "body"}),
    ]
    env = base_env(DATABASE_URL=sqlite_store.url, REDIS_URL=redis_url)
    done = cli(env, "import", "-", stdin=b"\n".join(lines))
    assert done.returncode == 1
    said = done.stderr.decode()
    assert "Traceback" not in said
    for expected in (
        "line 2: a line must be a JSON object, not list; skipped",
        "line 3: id is not an event id (a UUID); skipped",
        "line 4: body must be a JSON object, not list; skipped",
        "line 6: kind 'hologram' is unknown here",
        "line 7: received_at is not an ISO 8601 time; skipped",
        "line 8: body is missing or not a str; skipped",
        "Error: 6 lines were not imported (see above)",
    ):
        assert expected in said, said
    (message,) = queued(redis_client)
    assert message["event_id"] == good["id"] and message["source"] == "import"
    assert message["received_at"] == 1767323045.0 and message["settled"] is True
    again = cli(env, "import", "-", stdin=lines[0])  # before any worker has stored it
    assert again.returncode == 0, again.stderr
    assert b"0 queued for the workers, 0 already stored, 1 queued by an earlier" in again.stdout
    assert len(queued(redis_client)) == 1
    missing = cli(env, "import", str(sqlite_store.url) + ".nowhere")
    assert missing.returncode == 2 and b"Traceback" not in missing.stderr
