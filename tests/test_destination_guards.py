"""Each destination guarded (``workers.pausing``): paused after ``FORWARD_<NAME>_PAUSE_AFTER``
failed attempts in a row or a 410, its deliveries waiting without an attempt, one probe every
``FORWARD_<NAME>_PROBE_SECONDS``, resumed by the first success, an alert each way; paused and
resumed by hand (audited), shown by the CLI, the API, the console and /metrics; and
``FORWARD_<NAME>_ORDER=conversation``: a conversation's events one at a time, in Tavus's order,
while failures are injected. Real HTTP sinks, a real store, a real Celery worker."""

from __future__ import annotations

import base64
import os
import queue
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from sqlalchemy import inspect, select

from cli.main import main
from cli.simulate import conversation_lifecycle
from console.app import create_app
from console.metrics import create_metrics_app
from schemas.settings import Settings, SettingsError
from tests.console_fixtures import BEARER, console_settings, csrf_of, sign_in
from tests.helpers import TOKEN, stored_event, worker_env
from tests.services import Worker, wait_until
from tests.sinks import HttpSink, verified
from workers import forwarding, pausing
from workers.store.db import MIGRATIONS, Store
from workers.store.models import Alert, AuditEntry, Event, ForwardDelivery

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def app_settings(store: Store, url: str, **variables: str) -> Settings:
    """One webhook destination, ``app``, with ``FORWARD_APP_<KEY>`` = each of ``variables``."""
    env = {"FORWARD_APP_URL": url, "FORWARD_APP_SECRET": SECRET}
    env |= {f"FORWARD_APP_{key}": value for key, value in variables.items()}
    destinations = Settings.from_env(env).forward_destinations
    return Settings(
        database_url=store.url, forward_destinations=destinations, forward_timeout_seconds=2.0
    )


def table(store: Store, settings: Settings) -> dict:
    with store.session() as session:
        [row] = forwarding.destinations_table(session, settings)
    return row


def attempts(store: Store) -> int:
    with store.session() as session:
        return sum(d.attempts for d in session.scalars(select(ForwardDelivery)))


def test_the_settings_are_checked_by_name():
    env = {"FORWARD_APP_URL": "https://app.example.com/h", "FORWARD_APP_SECRET": SECRET}
    [default] = Settings.from_env(env).forward_destinations
    assert (default.pause_after, default.probe_seconds, default.order) == (20, 60.0, None)
    for key, bad in (("PAUSE_AFTER", "0"), ("PROBE_SECONDS", "soon"), ("ORDER", "arrival")):
        with pytest.raises(SettingsError, match=f"FORWARD_APP_{key}"):
            Settings.from_env({**env, f"FORWARD_APP_{key}": bad})


def test_failures_in_a_row_pause_it_a_probe_resumes_it_and_everything_arrives_once(store):
    sink = HttpSink(always=503).start()
    try:
        settings = app_settings(store, sink.url, PAUSE_AFTER="3", PROBE_SECONDS="0.5")
        events = [stored_event(store, body)[0] for body in conversation_lifecycle("c-pause")]
        first = [forwarding.deliver(store, e, "app", "callback", settings) for e in events[:3]]
        assert [o.status for o in first] == ["retrying"] * 3
        assert [o.alerts for o in first[:2]] == [(), ()]
        [alert] = first[2].alerts  # the third failure in a row pauses it: one alert
        assert alert["cause_key"] == "destination_paused:app"
        assert "3 failed attempts in a row" in alert["text"] and "HTTP 503" in alert["text"]

        # Paused: the others wait, neither attempted nor failed, and no second alert.
        for event_id in (*events[3:], events[0]):
            waited = forwarding.deliver(store, event_id, "app", "callback", settings)
            assert (waited.status, waited.alerts) == ("paused", ())
            assert 0 < waited.retry_in <= 1.0
        assert len(sink.received) == 3 and attempts(store) == 3
        row = table(store, settings)
        assert (row["state"], row["consecutive_failures"], row["pending"]) == (
            "paused",
            3,
            len(events),
        )
        assert row["last_success_at"] is None and "3 failed attempts" in row["pause_reason"]

        time.sleep(0.6)  # the probe is due: one delivery goes, fails, and it stays paused
        probe = forwarding.deliver(store, events[3], "app", "callback", settings)
        assert (probe.status, probe.alerts) == ("retrying", ())
        assert forwarding.deliver(store, events[4], "app", "callback", settings).status == "paused"
        assert len(sink.received) == 4

        sink.always = 200  # it is back: the next probe succeeds and resumes it
        time.sleep(0.6)
        resumed = forwarding.deliver(store, events[4], "app", "callback", settings)
        assert resumed.status == "delivered"
        [alert] = resumed.alerts
        assert alert["cause_key"] == "destination_resumed:app"
        for event_id in events:
            outcome = forwarding.deliver(store, event_id, "app", "callback", settings)
            assert outcome.status == "delivered" and outcome.alerts == ()
        row = table(store, settings)
        assert (row["state"], row["consecutive_failures"], row["pending"]) == ("active", 0, 0)
        assert row["last_success_at"] is not None
        delivered = [r.headers["webhook-id"] for r in verified(sink.accepted(), SECRET)]
        assert sorted(delivered) == sorted(events)  # each once
    finally:
        sink.stop()


def test_a_410_pauses_it_at_once(sqlite_store):
    sink = HttpSink(statuses=(410,)).start()
    try:
        settings = app_settings(sqlite_store, sink.url)
        event_id, _ = stored_event(sqlite_store, conversation_lifecycle("c-gone")[0])
        gone = forwarding.deliver(sqlite_store, event_id, "app", "callback", settings)
        assert gone.status == "failed"
        [alert] = gone.alerts
        assert alert["cause_key"] == "destination_paused:app" and "410" in alert["text"]
        row = table(sqlite_store, settings)
        assert row["state"] == "paused" and row["pause_reason"].startswith("HTTP 410 Gone")
    finally:
        sink.stop()


def test_paused_by_hand_shown_everywhere_and_audited(sqlite_store, redis_url, tmp_path):
    """`destinations pause NAME` holds it without probes until `destinations resume NAME`; the
    CLI, the API, the console page and /metrics show the same; each action is audited."""
    sink = HttpSink().start()
    try:
        guarded = app_settings(sqlite_store, sink.url, PROBE_SECONDS="0.1")
        settings = console_settings(
            redis_url, sqlite_store.url, tmp_path, forward_destinations=guarded.forward_destinations
        )
        env = {
            "DATABASE_URL": sqlite_store.url,
            "REDIS_URL": redis_url,
            "FORWARD_APP_URL": sink.url,
            "FORWARD_APP_SECRET": SECRET,
        }
        runner = CliRunner()
        listed = runner.invoke(main, ["destinations"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "app" in listed.output and "webhook" in listed.output and "active" in listed.output
        assert SECRET not in listed.output and sink.url not in listed.output

        paused = runner.invoke(main, ["destinations", "pause", "app"], env=env)
        assert paused.exit_code == 0 and "app: paused" in paused.output
        unknown = runner.invoke(main, ["destinations", "pause", "nope"], env=env)
        assert unknown.exit_code != 0 and "no destination 'nope'" in unknown.output

        event_id, _ = stored_event(sqlite_store, conversation_lifecycle("c-hand")[0])
        time.sleep(0.2)  # past PROBE_SECONDS: still no probe, a person paused it
        held = forwarding.deliver(sqlite_store, event_id, "app", "callback", guarded)
        assert held.status == "paused" and not sink.received

        client = create_app(settings).test_client()
        [api] = client.get("/api/v1/destinations", headers=BEARER).json["data"]
        assert (api["name"], api["type"], api["state"], api["pending"]) == (
            "app",
            "webhook",
            "paused",
            1,
        )
        assert api["paused_by"].startswith("cli:")
        metrics = scrape(settings)
        assert 'tavus_callbacks_destination_paused{destination="app"} 1.0' in metrics
        sign_in(client)
        page = client.get("/console/deliveries")
        assert page.status_code == 200 and b'id="destinations"' in page.data
        assert b"badge-paused" in page.data and b"Resume" in page.data

        # The console's Resume button, as a person presses it.
        pressed = client.post(
            "/console/destinations/app/resume", data={"csrf_token": csrf_of(page.data)}
        )
        assert pressed.status_code == 302
        assert forwarding.deliver(sqlite_store, event_id, "app", "callback", guarded).status == (
            "delivered"
        )
        metrics = scrape(settings)
        assert 'tavus_callbacks_destination_paused{destination="app"} 0.0' in metrics

        again = runner.invoke(main, ["destinations", "resume", "app"], env=env)
        assert again.exit_code == 0 and "was not paused" in again.output
        as_json = runner.invoke(main, ["destinations", "--json"], env=env)
        assert '"state": "active"' in as_json.output and '"pending": 0' in as_json.output
        with sqlite_store.session() as session:
            trail = [
                (a.action, a.target, a.outcome, a.actor.split(":")[0])
                for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
            ]
        assert trail == [
            ("pause", "destination:app", "done", "cli"),
            ("pause", "destination:nope", "refused", "cli"),
            ("sign-in", None, "done", "console"),
            ("resume", "destination:app", "done", "console"),
            ("resume", "destination:app", "nothing", "cli"),
        ]
    finally:
        sink.stop()


def scrape(settings: Settings) -> str:
    return create_metrics_app(settings).test_client().get("/metrics").get_data(as_text=True)


def test_migration_0012_adds_the_destination_states_and_goes_back(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'before.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = store.engine
    command.upgrade(config, "0011")
    assert "destination_states" not in inspect(store.engine).get_table_names()
    store.upgrade()
    assert "destination_states" in inspect(store.engine).get_table_names()
    command.downgrade(config, "0011")
    assert "destination_states" not in inspect(store.engine).get_table_names()
    store.dispose()


# --- FORWARD_<NAME>_ORDER=conversation ------------------------------------------------------


def in_tavus_order(store: Store, conversation_id: str) -> list[str]:
    """The conversation's events by Tavus's ``timestamp``, then arrival."""
    with store.session() as session:
        found = session.scalars(select(Event).where(Event.conversation_id == conversation_id))
        return [
            e.id
            for e in sorted(found, key=lambda e: (e.occurred_at or e.received_at, e.received_at))
        ]


def test_an_ordered_destination_gets_each_conversation_in_order_while_failing(sqlite_store):
    """Four "workers" (threads) deliver two conversations' events at once, the latest first,
    retrying when told to, while the sink answers one in three with a 500 and the first with a
    400 (failed for good: it lets the next go, and says so)."""
    statuses = (400, *random.Random(7).choices((500, 200, 200), k=60))
    sink = HttpSink(statuses=statuses).start()
    try:
        settings = app_settings(sqlite_store, sink.url, ORDER="conversation")
        forwarding.register_destinations(sqlite_store, settings)  # as a worker does at start
        conversations = ("c-order-a", "c-order-b")
        events = [
            stored_event(sqlite_store, body)[0]
            for c in conversations
            for body in conversation_lifecycle(c)
        ]

        todo: queue.Queue[str] = queue.Queue()
        for event_id in reversed(events):  # the latest first
            todo.put(event_id)
        outcomes: list[str] = []
        woken: list[str] = []  # the next event of a conversation, woken when one settles

        def work() -> None:
            """As a worker does: one try, and a task told to wait goes back to the queue."""
            while len(outcomes) < len(events):
                try:
                    event_id = todo.get(timeout=0.1)
                except queue.Empty:
                    continue
                outcome = forwarding.deliver(sqlite_store, event_id, "app", "callback", settings)
                woken.extend(task["args"][0] for task in outcome.wake)
                if outcome.retry_in is None:
                    outcomes.append(outcome.status)
                else:
                    time.sleep(0.01)  # sooner than told: the order holds anyway
                    todo.put(event_id)

        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(work) for _ in range(4)]:
                done.result(timeout=120)
        assert sorted(outcomes) == ["delivered"] * (len(events) - 1) + ["failed"]
        assert woken and set(woken) <= set(events)
        arrived = [r.headers["webhook-id"] for r in sink.accepted()]
        assert sorted(arrived) == sorted(set(events) - {sink.received[0].headers["webhook-id"]})
        for conversation in conversations:
            mine = set(in_tavus_order(sqlite_store, conversation))
            assert [e for e in arrived if e in mine] == [
                e for e in in_tavus_order(sqlite_store, conversation) if e in arrived
            ]
        with sqlite_store.session() as session:
            failed = session.scalars(
                select(ForwardDelivery).where(ForwardDelivery.status == "failed")
            ).one()
        assert failed.last_error == f"HTTP 400 from 127.0.0.1{pausing.RELEASED}"
        assert in_tavus_order(sqlite_store, "c-order-a")[0] == failed.event_id or (
            in_tavus_order(sqlite_store, "c-order-b")[0] == failed.event_id
        )
    finally:
        sink.stop()


# --- behind a real worker: the "done when" ------------------------------------------


@pytest.mark.integration
def test_a_worker_pauses_a_destination_that_is_down_resumes_it_and_keeps_order(
    redis_url, sqlite_url, tmp_path
):
    """``down`` answers 503 for a while: it pauses after 3 failures, alerts once, resumes on its
    own once it answers, and then has every event once. ``ordered`` answers one in three with a
    500 meanwhile, and still gets each conversation in Tavus's order."""
    store = Store(sqlite_url)
    store.upgrade()
    down = HttpSink(always=503).start()
    flaky = HttpSink(statuses=tuple(random.Random(3).choices((500, 200, 200), k=80))).start()
    settings = Settings(callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url)
    env = worker_env(
        settings,
        FORWARD_DOWN_URL=down.url,
        FORWARD_DOWN_SECRET=SECRET,
        FORWARD_DOWN_PAUSE_AFTER="3",
        FORWARD_DOWN_PROBE_SECONDS="1",
        FORWARD_ORDERED_URL=flaky.url,
        FORWARD_ORDERED_SECRET=SECRET,
        FORWARD_ORDERED_ORDER="conversation",
    )
    worker = Worker(env, tmp_path / "worker.log", queues="events,forward,alerts").start()
    try:
        from receiver import create_app as receiver_app

        client = receiver_app(settings).test_client()
        conversations = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        bodies = [body for c in conversations for body in conversation_lifecycle(c)]
        random.Random(5).shuffle(bodies)  # late callbacks: arrival is not Tavus's order
        for body in bodies:
            assert client.post(f"/callbacks/{TOKEN}", json=body).status_code == 202

        def cause_keys() -> list[str]:
            with store.session() as session:
                keys = session.scalars(select(Alert.cause_key))
                return sorted(k for k in keys if k.startswith("destination_"))

        wait_until(lambda: "destination_paused:down" in cause_keys(), timeout=60)
        time.sleep(2)  # paused: nothing more is attempted but the probes, one a second
        tried = len(down.received)
        time.sleep(2)
        assert len(down.received) - tried <= 3
        down.always = 200

        def all_delivered() -> bool:
            with store.session() as session:
                statuses = list(session.scalars(select(ForwardDelivery.status)))
            return len(statuses) == 2 * len(bodies) and set(statuses) == {"delivered"}

        wait_until(all_delivered, timeout=120)
        time.sleep(1)  # anything sent twice would have arrived by now
        assert cause_keys() == ["destination_paused:down", "destination_resumed:down"]
        with store.session() as session:
            ids = set(session.scalars(select(Event.id)))
        for sink in (down, flaky):
            got = [r.headers["webhook-id"] for r in verified(sink.accepted(), SECRET)]
            assert sorted(got) == sorted(ids)  # each once
        arrived = [r.headers["webhook-id"] for r in flaky.accepted()]
        for conversation in conversations:
            order = in_tavus_order(store, conversation)
            assert [e for e in arrived if e in set(order)] == order
        with store.session() as session:
            row = {
                r["name"]: r for r in forwarding.destinations_table(session, worker_settings(env))
            }
        assert row["down"]["state"] == "active" and row["down"]["pending"] == 0
    finally:
        worker.stop()
        down.stop()
        flaky.stop()
        store.dispose()


def worker_settings(env: dict[str, str]) -> Settings:
    return Settings.from_env({k: v for k, v in env.items() if k.startswith("FORWARD_")})
