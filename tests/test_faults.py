"""The fault suite: what a deployment survives, shown with real processes broken as production
breaks them.

Each case runs the receiver under real gunicorn (deploy/gunicorn.conf.py), a real Celery worker
started as the Procfile starts it (REMAP_SIGTERM=SIGQUIT), a private redis-server with AOF, and
the store (PostgreSQL where it runs, else SQLite). It breaks something mid-load and ends by
comparing the store with what was sent: every event stored once, byte for byte, its handler run
once. The figures of each case are printed at the end and quoted in the fault table of
docs/operations.md.
Visibility timeout and soft shutdown are short here so that redelivery happens in seconds.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis
import requests
from sqlalchemy import func, make_url, select, text

from cli.simulate import conversation_event, conversation_lifecycle
from receiver import create_app
from schemas.callbacks.conversation import RECORDING_READY, SHUTDOWN
from schemas.messages import ALERTS_QUEUE, RAISE_ALERT, AlertMessage, celery_envelope
from schemas.settings import Settings
from tests.bugs.planning import MARKER
from tests.helpers import TOKEN, Load, load, post, worker_env
from tests.services import (
    ROOT,
    CuttableProxy,
    RedisServer,
    Web,
    Worker,
    base_env,
    wait_until,
)
from tests.sinks import HttpSink
from tests.storage_fixtures import BUCKET
from workers import queries
from workers.storage.state import FINAL as FINAL_VERIFICATION
from workers.store.db import Store
from workers.store.models import (
    Alert,
    AlertDelivery,
    Conversation,
    DeliveryStatus,
    Event,
    EventStatus,
    Objective,
    Recording,
)

pytestmark = pytest.mark.integration

LOAD = 200
VISIBILITY_TIMEOUT = 10  # seconds; production: 900
SOFT_SHUTDOWN = 4  # seconds running tasks get on SIGTERM; production: 15
MAX_ATTEMPTS = 3
HEROKU_KILL_AFTER = 30  # seconds between SIGTERM and SIGKILL on Heroku
POISONED = "c-poisoned"


def poisoned_transcript() -> bytes:
    """A valid transcript callback that the store refuses to hold (see ``refuse_conversation``)."""
    [body] = [
        body
        for body in conversation_lifecycle(POISONED)
        if body.get("event_type") == "application.transcription_ready"
    ]
    return orjson.dumps(body)


@dataclass
class Rig:
    """The processes of one deployment, each of which a case may signal, stop and restart."""

    redis: RedisServer
    store: Store
    env: dict[str, str]
    web: Web
    worker: Worker

    @property
    def url(self) -> str:
        return f"{self.web.url}/callbacks/{TOKEN}"

    def broker(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cli.main", *args]
        return subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def rig(fault_db: str, tmp_path: Path) -> Iterator[Rig]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    store = Store(fault_db)
    store.upgrade()
    env = base_env(
        REDIS_URL=server.url,
        DATABASE_URL=fault_db,
        CALLBACK_TOKENS=TOKEN,
        VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
        WORKER_SOFT_SHUTDOWN_SECONDS=str(SOFT_SHUTDOWN),
        MAX_EVENT_ATTEMPTS=str(MAX_ATTEMPTS),
        REMAP_SIGTERM="SIGQUIT",  # as the Procfile's worker line
        # Inert until a case creates this file (tests/bugs/planning.py).
        TAVUS_TEST_PLANNING_BUG=str(tmp_path / "planning-bug"),
    )
    web = Web(env, tmp_path / "web.log").start()
    worker = Worker(env, tmp_path / "worker.log", include=("tests.bugs.planning",)).start()
    try:
        yield Rig(server, store, env, web, worker)
    finally:
        worker.stop()
        web.stop()
        server.stop()
        store.dispose()


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Iterator[list[dict[str, Any]]]:
    """Each case's measured outcome, printed as a table once the module is done."""
    rows: list[dict[str, Any]] = []
    yield rows
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    if reporter is None or not rows:
        return
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("fault suite: case | sent | stored | duplicates | redelivered | notes")
        for row in rows:
            reporter.write_line(
                f"  {row['case']} | {row['sent']} | {row['stored']} | {row['duplicates']} | "
                f"{row['redelivered']} | {row.get('notes', '')}"
            )


def stored_rows(store: Store) -> list[Any]:
    with store.session() as session:
        query = select(Event.id, Event.body, Event.status, Event.attempts, Event.last_error)
        return list(session.execute(query))


def settled(store: Store, expected: int, timeout: float = 90) -> list[Any]:
    """Wait until ``expected`` events are stored and none is still waiting to be processed."""

    def check() -> list[Any] | None:
        rows = stored_rows(store)
        waiting = [row for row in rows if row.status == EventStatus.RECEIVED]
        return rows if len(rows) >= expected and not waiting else None

    return wait_until(check, timeout=timeout, interval=0.25)


def exactly_once(
    store: Store, sent: list[bytes], failed: tuple[bytes, ...] = (), timeout: float = 90
) -> dict[str, int]:
    """The store holds every body sent once, byte for byte; each handler ran once."""
    try:
        rows = settled(store, len(sent), timeout)
    except TimeoutError:
        rows = stored_rows(store)  # the comparison below says what is missing
    stored = Counter(row.body for row in rows)
    figures = {
        "sent": len(sent),
        "stored": len(rows),
        "duplicates": sum(count - 1 for count in stored.values()),
    }
    missing = [orjson.loads(body) for body in sent if body.decode() not in stored]
    assert stored == Counter(body.decode() for body in sent), {
        **figures,
        "statuses": Counter(row.status for row in rows),
        "missing": [(m["conversation_id"], m["event_type"]) for m in missing[:10]],
    }
    failed_bodies = {body.decode() for body in failed}
    for row in rows:
        if row.body in failed_bodies:
            assert (row.status, row.attempts) == (EventStatus.FAILED, MAX_ATTEMPTS)
        else:
            assert (row.status, row.attempts) == (EventStatus.PROCESSED, 1), row
    _effects_once(store, [orjson.loads(body) for body in sent if body not in failed])
    return figures


def _effects_once(store: Store, bodies: list[dict[str, Any]]) -> None:
    """The records the handlers keep: one transcript, objective, recording per one sent."""
    types = Counter(body["event_type"] for body in bodies)
    with store.session() as session:
        transcripts = session.scalar(
            select(func.count()).where(Conversation.transcript_at.is_not(None))
        )
        objectives = session.scalar(select(func.count()).select_from(Objective))
        recordings = session.scalar(select(func.count()).where(Recording.ready_at.is_not(None)))
    assert transcripts == types["application.transcription_ready"]
    assert objectives == types["conversation.objective.completed"]
    assert recordings == types["application.recording_ready"]


def redelivered(worker: Worker, rows: list[Any], exclude: tuple[str, ...] = ()) -> int:
    """Events whose message a worker received more than once (retries of `exclude` aside)."""
    received = Counter(re.findall(r"Task tavus\.events\.process\[([0-9a-f-]{36})\] received",
                                  worker.output()))  # fmt: skip
    return sum(1 for row in rows if row.id not in exclude and received[row.id] > 1)


def processed_count(store: Store) -> int:
    with store.session() as session:
        query = select(func.count()).where(Event.status != EventStatus.RECEIVED)
        return session.scalar(query)


def refuse_conversation(store: Store, conversation_id: str) -> None:
    """Make the store itself refuse one conversation, as a constraint or a permission would:
    every handler of its events fails, deterministically, while production code is untouched."""
    message = "conversation refused by the store"
    with store.session() as session:
        if session.bind.dialect.name == "postgresql":
            session.execute(text(
                "CREATE FUNCTION refuse_conversation() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
            ))  # fmt: skip
            session.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON conversations FOR EACH ROW "
                f"WHEN (NEW.conversation_id = '{conversation_id}') "
                "EXECUTE FUNCTION refuse_conversation()"
            ))  # fmt: skip
        else:
            session.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON conversations "
                f"WHEN NEW.conversation_id = '{conversation_id}' "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            ))  # fmt: skip


def accept_conversations(store: Store) -> None:
    """The operator fixed the cause."""
    with store.session() as session:
        suffix = " ON conversations" if session.bind.dialect.name == "postgresql" else ""
        session.execute(text(f"DROP TRIGGER refuse{suffix}"))


def exited_within(service: Worker | Web, timeout: float) -> float:
    """Seconds the service's main process took to exit; fails past ``timeout`` with what it was
    doing: a Celery worker writes every thread's stack to its log on SIGUSR1."""
    started = time.monotonic()
    try:
        service.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        service.process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        pytest.fail(f"still running {timeout:.0f}s after SIGTERM:\n{service.output()[-8000:]}")
    return time.monotonic() - started


def test_worker_sigkilled_mid_load_loses_nothing(rig: Rig, figures: list) -> None:
    bodies = load(LOAD, "kill")
    sending = Load(rig.url, bodies).start()
    broker = rig.broker()
    # Kill while the worker holds messages it has not acked: they exist only in Redis now.
    wait_until(
        lambda: processed_count(rig.store) >= 30 and broker.hlen("unacked") > 0,
        timeout=60,
        interval=0.02,
    )
    held = broker.hlen("unacked")
    rig.worker.stop(signal.SIGKILL)
    killed = time.monotonic()
    stored_at_kill = processed_count(rig.store)
    assert sending.join().count() == {"accepted": LOAD}
    rig.worker.start()

    outcome = exactly_once(rig.store, bodies)
    recovered = time.monotonic() - killed
    assert stored_at_kill < LOAD and held > 0
    figures.append({
        "case": "worker SIGKILLed mid-load, restarted",
        **outcome,
        "redelivered": redelivered(rig.worker, stored_rows(rig.store)),
        "notes": f"{held} unacked at the kill, all stored {recovered:.0f}s after it",
    })  # fmt: skip


def test_sigterm_to_every_process_mid_load_as_heroku_does(rig: Rig, figures: list) -> None:
    bodies = load(LOAD, "term")
    sending = Load(rig.url, bodies, threads=2, pace=0.02).start()
    broker = rig.broker()
    # Both mid-load: posts still coming in, the worker busy with a backlog.
    wait_until(
        lambda: processed_count(rig.store) >= 30 and broker.hlen("unacked") > 0,
        timeout=60,
        interval=0.01,
    )
    assert sending.answered() < LOAD
    # Heroku: SIGTERM to every process of each dyno (gunicorn master and workers; celery
    # parent and pool children), SIGKILL 30 s later.
    rig.web.signal_all(signal.SIGTERM)
    rig.worker.signal_all(signal.SIGTERM)
    web_exit = exited_within(rig.web, HEROKU_KILL_AFTER)
    worker_exit = exited_within(rig.worker, HEROKU_KILL_AFTER)
    rig.web.stop()
    rig.worker.stop()
    first = sending.join().count()
    assert set(first) <= {"accepted", "refused"}, first  # an answer, or no connection at all

    rig.web.start()
    rig.worker.start()
    unanswered = [
        body for index, body in enumerate(bodies) if sending.outcomes[index] != "accepted"
    ]
    resent = Load(rig.url, unanswered, resend=True).start().join().count()
    assert set(resent) <= {"accepted", "duplicate"}, resent

    outcome = exactly_once(rig.store, bodies)
    figures.append({
        "case": "SIGTERM to web and worker (parents and children) mid-load, restarted",
        **outcome,
        "redelivered": redelivered(rig.worker, stored_rows(rig.store)),
        "notes": (
            f"web exited in {web_exit:.1f}s, worker in {worker_exit:.1f}s; "
            f"{first['refused']} posts refused while down, resent"
        ),
    })  # fmt: skip


def long_transcript(conversation_id: str, bytes_wanted: int) -> bytes:
    """A transcript callback bigger than ``bytes_wanted``: an hour-long conversation's."""
    entries = [{"role": "user", "content": "x" * 1000} for _ in range(bytes_wanted // 1000)]
    body = conversation_event(
        conversation_id,
        "application.transcription_ready",
        datetime.now(UTC),
        {"transcript": entries},
    )
    return orjson.dumps(body)


def test_sigterm_while_a_job_is_half_written_to_a_pool_process(rig: Rig, figures: list) -> None:
    """The cause of the worker that outlived Heroku's 30 s (docs/reliability.md). The main
    process writes each job to a pool process's pipe from its event loop; with
    REMAP_SIGTERM=SIGQUIT Celery's cold shutdown runs inside the SIGTERM handler and waits there
    for the pool to stop, so a write the signal interrupted is never finished, the pool process
    waits for the rest of its job, and the main process waited for it (workers/prefork.py now
    waits so long only). The hunt caught it with a 1.6 KB job (the handler ran between the
    job's header and its body); here a 1 MB job, bigger than the pipe, with the pool processes
    paused, leaves the write half done every time."""
    children = psutil.Process(rig.worker.process.pid).children()
    for child in children:
        child.suspend()
    body = long_transcript("c-half-written", 1_000_000)  # the pipe holds 64 KiB
    assert post(requests.Session(), rig.url, body) == "accepted"
    wait_until(lambda: rig.broker().hlen("unacked") == 1, timeout=30)
    time.sleep(1)  # the main process takes the message and writes what the pipe holds
    rig.worker.signal_all(signal.SIGTERM)
    time.sleep(1)
    for child in children:
        child.resume()
    took = exited_within(rig.worker, HEROKU_KILL_AFTER)
    rig.worker.stop()
    rig.worker.start()

    [row] = settled(rig.store, 1)
    assert (row.body, row.status) == (body.decode(), EventStatus.PROCESSED)
    figures.append({
        "case": "SIGTERM while a 1 MB job is half written to a pool process",
        "sent": 1, "stored": 1, "duplicates": 0,
        "redelivered": redelivered(rig.worker, [row]),
        "notes": f"worker exited in {took:.1f}s",
    })  # fmt: skip


@pytest.mark.parametrize(
    ("how", "sig"), [("restarted", signal.SIGTERM), ("crashed (SIGKILL)", signal.SIGKILL)]
)
def test_redis_restarted_with_aof_loses_nothing(
    rig: Rig, figures: list, how: str, sig: signal.Signals
) -> None:
    """A restart writes the AOF out; a crash loses nothing only because every write is fsynced
    before it is answered (``appendfsync always``, as tests/services.py runs Redis)."""
    bodies = load(LOAD, "aof")
    sending = Load(rig.url, bodies, resend=True).start()
    broker = rig.broker()
    wait_until(lambda: sending.answered() >= LOAD // 3, timeout=60, interval=0.01)
    waiting = broker.llen("events") + broker.hlen("unacked")
    rig.redis.stop(sig)
    time.sleep(2)
    rig.redis.start()
    answers = sending.join().count()
    # "duplicate": queued just before Redis went down, but the answer was lost; the resend
    # finds the key that the AOF kept.
    assert set(answers) <= {"accepted", "spooled", "duplicate"}, answers

    outcome = exactly_once(rig.store, bodies)
    figures.append({
        "case": f"Redis {how} mid-load, AOF",
        **outcome,
        "redelivered": redelivered(rig.worker, stored_rows(rig.store)),
        "notes": (
            f"{waiting} messages in Redis at the restart; "
            f"{sum(sending.failed_attempts.values())} posts refused while down, resent "
            f"({answers['duplicate']} of them had been queued: answered duplicate)"
        ),
    })  # fmt: skip


def test_redis_restarted_while_a_task_runs_the_worker_reconnects(rig: Rig, figures: list) -> None:
    """The race kombu 5.7 loses (workers/broker.py): a worker holding an unacked message and
    waiting for a message (BLMOVE) when Redis goes away must reconnect, not stop."""
    busy = load(1, "busy")
    broker = rig.broker()
    with rig.store.engine.connect() as blocker, blocker.begin():
        if blocker.dialect.name == "postgresql":  # SQLite: begin() took the write lock
            blocker.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        assert Load(rig.url, busy).start().join().count() == {"accepted": 1}
        wait_until(
            lambda: (
                broker.hlen("unacked") == 1
                and any(client["cmd"] == "blmove" for client in broker.client_list())
            ),
            timeout=20,
        )
        rig.redis.stop(signal.SIGTERM)
        rig.redis.start()
    after = load(20, "after")
    assert set(Load(rig.url, after, resend=True).start().join().count()) <= {"accepted"}

    outcome = exactly_once(rig.store, busy + after)
    assert rig.worker.process.poll() is None  # the same worker, never restarted
    figures.append({
        "case": "Redis restarted while a task runs and the worker waits for a message",
        **outcome,
        "redelivered": redelivered(rig.worker, stored_rows(rig.store)),
        "notes": "the worker reconnected by itself and processed what came after",
    })  # fmt: skip


def test_every_event_delivered_three_times_concurrently(rig: Rig, figures: list) -> None:
    bodies = load(LOAD, "thrice")
    # The three copies of a body sit side by side, so a 12-thread pool posts them at once.
    copies = [body for body in bodies for _ in range(3)]
    answers = Load(rig.url, copies, threads=12).start().join().count()
    assert answers == {"accepted": LOAD, "duplicate": 2 * LOAD}

    outcome = exactly_once(rig.store, bodies)
    figures.append({
        "case": "every event posted 3 times concurrently",
        **outcome,
        "sent": len(copies),
        "redelivered": redelivered(rig.worker, stored_rows(rig.store)),
        "notes": f"{LOAD} answered accepted, {2 * LOAD} answered duplicate",
    })  # fmt: skip


def test_poison_event_is_dead_lettered_the_queue_flows_and_replay_recovers_it(
    rig: Rig, figures: list
) -> None:
    refuse_conversation(rig.store, POISONED)
    poison = poisoned_transcript()
    good = load(60, "good")
    assert Load(rig.url, [poison, *good]).start().join().count() == {"accepted": 61}

    outcome = exactly_once(rig.store, [poison, *good], failed=(poison,))
    [dead] = [row for row in stored_rows(rig.store) if row.body == poison.decode()]
    assert "conversation refused by the store" in dead.last_error

    accept_conversations(rig.store)
    replayed = rig.cli("replay", "--failed")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("replayed 1 event:")
    assert dead.id in replayed.stdout and "conversation refused by the store" in replayed.stdout
    wait_until(lambda: {r.status for r in stored_rows(rig.store)} == {"processed"}, timeout=30)
    again = rig.cli("replay", "--failed")
    assert again.stdout.strip() == "no failed events to replay"
    one = rig.cli("replay", dead.id)  # replaying a processed event runs its handler again
    assert one.returncode == 0 and dead.id in one.stdout
    rows = settled(rig.store, 61)
    assert len(rows) == 61 and {row.status for row in rows} == {"processed"}
    with rig.store.session() as session:
        assert len(session.get(Conversation, POISONED).transcript) == 13

    figures.append({
        "case": "one poison event among 60 good ones",
        **outcome,
        "redelivered": redelivered(rig.worker, rows, exclude=(dead.id,)),
        "notes": f"poison failed after {MAX_ATTEMPTS} attempts, the rest processed; "
        "replay --failed processed it once fixed",
    })  # fmt: skip


def test_after_a_redis_wipe_the_worker_recovers_by_itself(rig: Rig, figures: list) -> None:
    before = load(30, "before")
    assert Load(rig.url, before).start().join().count() == {"accepted": 30}
    settled(rig.store, 30)
    broker = rig.broker()
    broker.flushall()  # queues, dedup keys, kombu's bindings and unacked index: all gone
    refuse_conversation(rig.store, POISONED)
    poison = poisoned_transcript()
    after = load(30, "after")

    # Same worker, not restarted: events posted after the wipe are processed, and the poison
    # event's retries (published by the worker itself) still find their queue.
    assert Load(rig.url, [poison, *after]).start().join().count() == {"accepted": 31}
    outcome = exactly_once(rig.store, [*before, poison, *after], failed=(poison,))
    rows = stored_rows(rig.store)
    [dead] = [row.id for row in rows if row.body == poison.decode()]
    figures.append({
        "case": "Redis wiped (FLUSHALL), worker not restarted",
        **outcome,
        "redelivered": redelivered(rig.worker, rows, exclude=(dead,)),
        "notes": f"30 before and 31 after the wipe; the poison retried {MAX_ATTEMPTS}x, failed",
    })  # fmt: skip


def test_a_store_not_reachable_yet_holds_events_instead_of_dropping_them(
    redis_url: str, tmp_path: Path, figures: list
) -> None:
    """The store fails, not a handler (down, or not migrated yet): the task retries with
    backoff for as long as it takes, because its message may be the event's only copy."""
    database = f"sqlite:///{tmp_path / 'late.db'}"  # no tables until the release step runs
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=database)
    worker = Worker(worker_env(settings), tmp_path / "worker.log").start()
    try:
        client = create_app(settings).test_client()
        bodies = load(10, "nostore")
        for body in bodies:
            assert client.post(f"/callbacks/{TOKEN}", data=body).status_code == 202
        retrying = "infrastructure fault, retry in"
        wait_until(lambda: worker.output().count(retrying) >= 10, timeout=30)
        store = Store(database)
        store.upgrade()
        outcome = exactly_once(store, bodies, timeout=60)
        store.dispose()
    finally:
        worker.stop()
    figures.append({
        "case": "store unreachable (not migrated) while events arrive",
        **outcome,
        "redelivered": "-",
        "notes": "every event retried with backoff until the store answered, then stored once",
    })  # fmt: skip


def test_a_body_that_breaks_planning_is_stored_failed_listed_and_replayed(
    rig: Rig, figures: list, tmp_path: Path
) -> None:
    """A bug on the path before the handler (schema load, dates, routing): the body is stored,
    fails after the bounded attempts with its stage, raises one alert, is listed, and replays
    to processed once the bug is gone; the events behind it never wait."""
    bug = Path(rig.env["TAVUS_TEST_PLANNING_BUG"])
    bug.touch()
    [poison_body] = [
        body
        for body in conversation_lifecycle("c-planning-bug")
        if body.get("event_type") == "application.perception_analysis"
    ]
    poison_body["properties"]["analysis"] = f"{MARKER} and some analysis"
    poison = orjson.dumps(poison_body)
    good = load(60, "plan")
    started = time.monotonic()
    assert Load(rig.url, [poison, *good]).start().join().count() == {"accepted": 61}

    outcome = exactly_once(rig.store, [poison, *good], failed=(poison,))
    failed_after = time.monotonic() - started
    with rig.store.session() as session:
        dead = session.scalars(select(Event).where(Event.body == poison.decode())).one()
        assert (dead.failed_stage, dead.attempts) == ("plan", MAX_ATTEMPTS)
        assert "injected planning bug" in dead.last_error
    cause = f"pipeline_failure:events.plan:{dead.id}"
    wait_until(lambda: _alert_causes(rig.store).count(cause) == 1, timeout=30)

    listed = rig.cli("events", "--status", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = orjson.loads(listed.stdout)
    assert (row["event_id"], row["failed_stage"]) == (dead.id, "plan")

    bug.unlink()  # the fix is deployed
    replayed = rig.cli("replay", "--failed")
    assert replayed.returncode == 0 and dead.id in replayed.stdout, replayed.stderr
    wait_until(lambda: {r.status for r in stored_rows(rig.store)} == {"processed"}, timeout=30)
    rows = settled(rig.store, 61)
    assert len(rows) == 61
    with rig.store.session() as session:
        assert MARKER in session.get(Conversation, "c-planning-bug").perception_analysis
    assert _alert_causes(rig.store).count(cause) == 1  # one alert, however often it failed
    figures.append({
        "case": "a body that breaks planning (bug injected), among 60 good ones",
        **outcome,
        "redelivered": redelivered(rig.worker, rows, exclude=(dead.id,)),
        "notes": f"stored at once, failed at stage plan after {MAX_ATTEMPTS} attempts "
        f"({failed_after:.0f}s), one pipeline_failure alert; replayed to processed once fixed",
    })  # fmt: skip


def _alert_causes(store: Store) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(Alert.cause_key)))


def test_postgresql_unreachable_for_15s_while_recordings_are_verified_and_alerts_delivered(
    postgres_url: str, emulators: Any, tmp_path: Path, figures: list
) -> None:
    """The store goes away (a proxy in front of PostgreSQL is cut: connections dropped, new ones
    refused) while recordings are being verified and alerts delivered. Every task meets the
    outage as a transient fault and retries under the one policy: afterwards every verification
    is final (none left pending) and every alert delivered."""
    direct = make_url(postgres_url)
    proxy = CuttableProxy(direct.port or 5432, direct.host or "127.0.0.1").start()
    through_proxy = direct.set(host="127.0.0.1", port=proxy.port)
    database = through_proxy.render_as_string(hide_password=False)
    store = Store(postgres_url)
    store.upgrade()
    server = RedisServer(tmp_path / "redis").start()
    slack = HttpSink().start()
    settings = Settings(callback_tokens=(TOKEN,), redis_url=server.url, database_url=database)
    env = worker_env(
        settings,
        **emulators.worker_env(),
        RECORDING_LOCATIONS=f"s3:{BUCKET}",
        RECORDING_WAIT_SECONDS="45",
        STORAGE_RETRY_BASE_SECONDS="1",
        STORAGE_TIMEOUT_SECONDS="2",
        SLACK_WEBHOOK_URL=f"{slack.url}/services/T0001/B0001/outage",
        ALERT_TIMEOUT_SECONDS="1",
        VISIBILITY_TIMEOUT_SECONDS=str(VISIBILITY_TIMEOUT),
    )
    worker = Worker(env, tmp_path / "worker.log", concurrency=3).start()
    client = create_app(settings).test_client()
    now = datetime.now(UTC)
    present = [f"c-pg-present-{n:02d}" for n in range(10)]
    missing = [f"c-pg-missing-{n:02d}" for n in range(5)]
    failed = [f"c-pg-failed-{n:02d}" for n in range(10)]
    bodies = []
    for conversation_id in present + missing:
        key = f"recordings/{conversation_id}.mp4"
        if conversation_id in present:
            emulators.upload("s3", BUCKET, key, b"\x00\x00\x00\x18ftypmp42" * 100)
        properties = {"storage_provider": "s3", "storage_uri": f"s3://{BUCKET}/{key}"}
        bodies.append(conversation_event(conversation_id, RECORDING_READY, now, properties))
    for conversation_id in failed:
        properties = {"shutdown_reason": "daily_room_has_been_deleted"}
        bodies.append(conversation_event(conversation_id, SHUTDOWN, now, properties))
    sent = [orjson.dumps(body) for body in bodies]
    try:
        for body in sent:
            assert client.post(f"/callbacks/{TOKEN}", data=body).status_code == 202
        wait_until(lambda: processed_count(store) >= 5, timeout=30, interval=0.05)
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(15)
        proxy.start()
        restored = time.monotonic() - cut_at

        def all_final() -> bool:
            with store.session() as session:
                rows = session.scalars(select(Recording)).all()
                waiting = session.scalar(
                    select(func.count()).where(AlertDelivery.status.not_in(DeliveryStatus.FINAL))
                )
                alerts = session.scalar(select(func.count()).select_from(Alert))
            done = [r for r in rows if r.verification_status in FINAL_VERIFICATION]
            return len(done) == 15 and alerts == 15 and waiting == 0

        wait_until(all_final, timeout=180, interval=0.5)
        recovered = time.monotonic() - cut_at - restored
        outcome = exactly_once(store, sent)
        with store.session() as session:
            statuses = Counter(
                (row.conversation_id.rsplit("-", 1)[0], row.verification_status)
                for row in session.scalars(select(Recording))
            )
            deliveries = Counter(
                (d.channel, d.status) for d in session.scalars(select(AlertDelivery))
            )
        assert statuses == {("c-pg-present", "verified"): 10, ("c-pg-missing", "missing"): 5}
        assert deliveries == {("log", "delivered"): 15, ("slack", "delivered"): 15}
        posted = len(slack.accepted())
        assert posted >= 15
        retried = worker.output().count("infrastructure fault, retry in")
        assert retried > 0  # the outage was met, and retried, not failed
    finally:
        worker.stop()
        slack.stop()
        server.stop()
        proxy.stop()
        store.dispose()
    figures.append({
        "case": "PostgreSQL unreachable for 15 s while recordings are verified, alerts sent",
        **outcome,
        "redelivered": "-",
        "notes": f"10 verified, 5 missing, 15 alerts delivered ({posted - 15} sent twice) "
        f"{recovered:.0f}s after the store came back; {retried} transient retries",
    })  # fmt: skip


def test_a_body_the_store_refuses_outside_its_handler_is_dead_lettered_at_stage_store(
    rig: Rig, figures: list
) -> None:
    """The event's own INSERT fails, not for the infrastructure (a constraint, a trigger): the
    task is retried the bounded number of times (counted in its message header, through real
    Celery retries), then the event is recorded ``failed`` at stage ``store``, with its alert."""
    marker = "REFUSED-BY-THE-EVENTS-TABLE"
    with rig.store.session() as session:
        condition = f"NEW.body LIKE '%{marker}%' AND NEW.last_error IS NULL"
        if session.bind.dialect.name == "postgresql":
            session.execute(text(
                "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'event refused by the store'; END $$"
            ))  # fmt: skip
            session.execute(text(
                f"CREATE TRIGGER refuse_event BEFORE INSERT ON events FOR EACH ROW "
                f"WHEN ({condition}) EXECUTE FUNCTION refuse_event()"
            ))  # fmt: skip
        else:
            session.execute(text(
                f"CREATE TRIGGER refuse_event BEFORE INSERT ON events WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'event refused by the store'); END"
            ))  # fmt: skip
    [body] = [
        body
        for body in conversation_lifecycle("c-refused-row")
        if body.get("event_type") == "application.perception_analysis"
    ]
    body["properties"]["analysis"] = marker
    refused = orjson.dumps(body)
    good = load(20, "row")
    assert Load(rig.url, [refused, *good]).start().join().count() == {"accepted": 21}

    rows = settled(rig.store, 21)
    [dead] = [row for row in rows if row.body == refused.decode()]
    assert (dead.status, dead.attempts) == (EventStatus.FAILED, MAX_ATTEMPTS)
    assert "event refused by the store" in dead.last_error
    with rig.store.session() as session:
        assert session.get(Event, dead.id).failed_stage == "store"
    assert {row.status for row in rows if row.id != dead.id} == {EventStatus.PROCESSED}
    cause = f"pipeline_failure:events.store:{dead.id}"
    wait_until(lambda: _alert_causes(rig.store).count(cause) == 1, timeout=30)
    retries = rig.worker.output().count(f"events {dead.id}: attempt")
    assert retries == MAX_ATTEMPTS - 1  # bounded: the header carried the count across retries
    figures.append({
        "case": "the store refuses an event's own row (not the infrastructure), among 20",
        "sent": 21,
        "stored": len(rows),
        "duplicates": 0,
        "redelivered": "-",
        "notes": f"retried {retries}x by Celery, then failed at stage store with one alert",
    })  # fmt: skip


def test_an_alert_sent_while_the_store_dies_is_recorded_not_sent_again(
    postgres_url: str, tmp_path: Path
) -> None:
    """Issue 22: Slack answers, then the store goes away before the worker records it. Slack
    takes no idempotency key, so the one defence is not to send again: the retry records the
    attempt it was handed instead of waiting out the lease and sending a second message."""
    direct = make_url(postgres_url)
    proxy = CuttableProxy(direct.port or 5432, direct.host or "127.0.0.1").start()
    through_proxy = direct.set(host="127.0.0.1", port=proxy.port)
    store = Store(postgres_url)
    store.upgrade()
    server = RedisServer(tmp_path / "redis").start()
    slack = HttpSink().start()

    def store_dies() -> None:  # between Slack's answer and the worker's record of it
        if len(slack.received) == 1:
            proxy.cut()
            threading.Timer(4, proxy.start).start()

    slack.on_post = store_dies
    settings = Settings(
        callback_tokens=(TOKEN,),
        redis_url=server.url,
        database_url=through_proxy.render_as_string(hide_password=False),
    )
    env = worker_env(
        settings,
        SLACK_WEBHOOK_URL=f"{slack.url}/services/T0001/B0001/storeDies",
        ALERT_TIMEOUT_SECONDS="1",  # a lease of 40 s: a second send would come well within 90
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    broker = redis.Redis.from_url(server.url)
    alert = AlertMessage(
        cause_key="store_dies:c1", severity="critical", title="Store dies", text="",
        conversation_id="c1", event_id=None, facts={},
    )  # fmt: skip
    try:
        broker.lpush(ALERTS_QUEUE, celery_envelope(RAISE_ALERT, "raise-1", [alert], ALERTS_QUEUE))

        def slack_delivery() -> dict | None:
            with store.session() as session:
                rows = queries.recent_alerts(session)
            slack_rows = [d for row in rows for d in row["deliveries"] if d["channel"] == "slack"]
            done = [d for d in slack_rows if d["status"] in ("delivered", "failed")]
            return done[0] if done else None

        found = wait_until(slack_delivery, timeout=90, interval=0.5)
        time.sleep(50)  # past the lease: a lost attempt would be sent again by now
        assert found["status"] == "delivered"
        assert [a["outcome"] for a in found["history"]] == ["delivered"]
        assert len(slack.received) == 1
        assert "infrastructure fault" in worker.output()  # the store did fail in between
    finally:
        worker.stop()
        slack.stop()
        server.stop()
        proxy.stop()
        broker.close()
        store.dispose()
