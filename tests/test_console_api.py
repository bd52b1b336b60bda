"""The read API through Flask's test client: auth, filters, pagination, errors, replay, and the
conversation record equal to `tavus-callbacks conversation --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from cli.simulate import conversation_lifecycle, replica_training
from console import create_app
from tests.console_fixtures import (
    API_TOKEN,
    BEARER,
    T0,
    add_event,
    console_settings,
    failed_shutdown,
)
from tests.helpers import TOKEN
from tests.services import ROOT, base_env, wait_until
from workers.store.db import Store
from workers.store.models import Event, EventStatus


@pytest.fixture
def api(redis_url: str, sqlite_store: Store, tmp_path: Path):
    app = create_app(console_settings(redis_url, sqlite_store.url, tmp_path))
    return app.test_client()


def get(client, path: str, **params):
    return client.get(path, query_string=params, headers=BEARER)


def test_no_token_configured_means_no_api(redis_url, sqlite_store, tmp_path) -> None:
    settings = console_settings(redis_url, sqlite_store.url, tmp_path).with_overrides(api_tokens=())
    client = create_app(settings).test_client()
    for path in ("/api/v1/events", "/api/v1/openapi.json"):
        response = client.get(path, headers=BEARER)
        assert response.status_code == 404
        assert response.json["error"] == "not_found"


def test_bearer_token_is_required(api) -> None:
    missing = api.get("/api/v1/events")
    assert missing.status_code == 401
    assert missing.json == {"error": "unauthorized", "message": "a valid bearer token is needed"}
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in (f"Bearer {API_TOKEN}x", f"Basic {API_TOKEN}", API_TOKEN, f"Bearer {TOKEN}"):
        wrong = api.get("/api/v1/events", headers={"Authorization": header})
        assert wrong.status_code == 401, header  # the callback token is no API token
    assert api.get("/api/v1/events", headers={"Authorization": f"bearer {API_TOKEN}"}).json == {
        "data": [],
        "next_cursor": None,
    }


def test_filters(api, sqlite_store) -> None:
    store = sqlite_store
    shutdown = add_event(store, T0, conversation_id="c-a")
    failed = add_event(store, T0 + timedelta(minutes=1), conversation_id="c-b", status="failed")
    replica = add_event(
        store,
        T0 + timedelta(minutes=2),
        kind="replica",
        event_type=None,
        conversation_id=None,
        body=replica_training("r-42", failed=False),
    )
    joined = add_event(
        store,
        T0 + timedelta(minutes=3),
        event_type="system.replica_joined",
        conversation_id="c-b",
        body={"conversation_id": "c-b", "properties": {"replica_id": "r-42x"}},
    )

    def ids(**params) -> list[str]:
        response = get(api, "/api/v1/events", **params)
        assert response.status_code == 200, response.json
        return [row["event_id"] for row in response.json["data"]]

    assert ids() == [joined, replica, failed, shutdown]  # newest first
    assert ids(kind="replica") == [replica]
    assert ids(type="system.shutdown") == [failed, shutdown]
    assert ids(status="failed") == [failed]
    assert ids(conversation="c-b") == [joined, failed]
    assert ids(resource="r-42") == [replica]  # r-42x is another id
    assert ids(since=(T0 + timedelta(minutes=1)).isoformat()) == [joined, replica, failed]
    assert ids(until="2026-11-30T12:02:00Z") == [failed, shutdown]
    assert ids(since="2026-11-30T12:01:00+00:00", until="2026-11-30T12:02:00Z") == [failed]
    assert ids(conversation="c-b", status="processed") == [joined]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"status": "done"}, "status"),
        ({"kind": "meeting"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "until"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # base64 of [1,2]: JSON, but not ours
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(api, params, field) -> None:
    response = get(api, "/api/v1/events", **params)
    assert response.status_code == 422
    assert response.json["error"] == "invalid_parameters"
    assert field in response.json["errors"]


def test_pages_with_events_arriving_in_between_skip_nothing_and_repeat_nothing(
    api, sqlite_store
) -> None:
    store = sqlite_store
    # Five share one timestamp: the id breaks the tie, so a page may end inside the group.
    first = {add_event(store, T0 + timedelta(seconds=i // 5)) for i in range(23)}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        body = get(api, "/api/v1/events", **params).json
        seen += [row["event_id"] for row in body["data"]]
        pages += 1
        # Newer events arrive while the client pages, and one with an equal timestamp.
        add_event(store, T0 + timedelta(hours=1, seconds=pages))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 6
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == first
    # From the top again: the new events come first, then the same 23.
    again = get(api, "/api/v1/events", limit=200).json
    assert [row["event_id"] for row in again["data"]][pages:] == seen
    assert again["next_cursor"] is None


def test_event_has_its_raw_body_and_attempts(api, sqlite_store) -> None:
    event_id = failed_shutdown(sqlite_store, "c-raw")
    record = get(api, f"/api/v1/events/{event_id}").json
    assert record["event_id"] == event_id
    assert record["status"] == "failed"
    assert record["attempts"] == 8
    assert record["last_error"] == "OperationalError: the store refused"
    with sqlite_store.session() as session:
        assert record["body"] == session.get(Event, event_id).body  # as stored, byte for byte
    assert json.loads(record["body"])["properties"]["shutdown_reason"]
    assert record["alerts"] == [] and record["deliveries"] == []
    missing = get(api, "/api/v1/events/nope")
    assert (missing.status_code, missing.json["error"]) == (404, "not_found")


def test_replay_of_unknown_event_is_404_and_touches_nothing(api) -> None:
    response = api.post("/api/v1/events/nope/replay", headers=BEARER)
    assert response.status_code == 404
    assert api.post("/api/v1/events/nope/replay").status_code == 401


def test_replay_without_redis_is_503_and_changes_nothing(sqlite_store, tmp_path) -> None:
    from tests.services import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = create_app(console_settings(dead, sqlite_store.url, tmp_path)).test_client()
    event_id = failed_shutdown(sqlite_store, "c-no-redis")
    response = client.post(f"/api/v1/events/{event_id}/replay", headers=BEARER)
    assert response.status_code == 503
    assert response.json["error"] == "redis_unavailable"
    with sqlite_store.session() as session:
        assert session.get(Event, event_id).status == EventStatus.FAILED


def test_openapi_document_is_valid_and_lists_every_endpoint(api) -> None:
    document = api.get("/api/v1/openapi.json").json  # public wherever the API is on
    validate(document)
    assert set(document["paths"]) >= {
        "/events", "/events/{event_id}", "/events/{event_id}/replay", "/conversations",
        "/conversations/{conversation_id}", "/replicas/{replica_id}", "/videos/{video_id}",
        "/documents/{document_id}", "/alerts", "/deliveries",
    }  # fmt: skip
    names = {p["name"] for p in document["paths"]["/events"]["get"]["parameters"]}
    assert names >= {"kind", "type", "status", "conversation", "resource", "since", "until",
                     "limit", "cursor"}  # fmt: skip


# --- with a real Celery worker -----------------------------------------------------------------


@pytest.mark.integration
def test_conversation_is_the_cli_record_and_replay_processes_a_failed_event(
    pipeline, tmp_path
) -> None:
    store, receiver = pipeline["store"], pipeline["client"]
    settings = console_settings(pipeline["settings"].redis_url, store.url, tmp_path)
    client = create_app(settings).test_client()
    bodies = conversation_lifecycle("c-api")
    for body in bodies:
        assert receiver.post(f"/callbacks/{TOKEN}", json=body).status_code == 202

    def all_processed():
        rows = get(client, "/api/v1/events", conversation="c-api", limit=200).json["data"]
        return len(rows) == len(bodies) and {r["status"] for r in rows} == {"processed"}

    wait_until(all_processed, timeout=30)

    def settled() -> dict | None:  # storage and alert tasks finish on their own time
        record = get(client, "/api/v1/conversations/c-api").json
        verification = (record["recording"] or {}).get("verification") or {}
        deliveries = [d for alert in record["alerts"] for d in alert["deliveries"]]
        verified = verification.get("status") not in (None, "pending")
        return record if verified and all(d["delivered_at"] for d in deliveries) else None

    record = wait_until(settled, timeout=30)
    env = base_env(DATABASE_URL=store.url, REDIS_URL=settings.redis_url)
    shown = subprocess.run(
        [sys.executable, "-m", "cli.main", "conversation", "c-api", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert record == json.loads(shown.stdout)
    assert record["status"] == "ended" and len(record["transcript"]) == 13
    listed = get(client, "/api/v1/conversations", status="ended").json["data"]
    assert [c["conversation_id"] for c in listed] == ["c-api"]
    assert get(client, "/api/v1/conversations", status="active").json["data"] == []
    assert get(client, "/api/v1/conversations/c-nobody").status_code == 404

    event_id = failed_shutdown(store, "c-replayed")
    replayed = client.post(f"/api/v1/events/{event_id}/replay", headers=BEARER)
    assert replayed.status_code == 202
    assert replayed.json["was"] == "failed" and replayed.json["attempts"] == 8
    wait_until(
        lambda: get(client, f"/api/v1/events/{event_id}").json["status"] == "processed",
        timeout=30,
    )
    assert get(client, "/api/v1/conversations/c-replayed").json["status"] == "ended"


@pytest.mark.integration
def test_resources_by_id(pipeline, tmp_path) -> None:
    from cli.simulate import document, video

    store, receiver = pipeline["store"], pipeline["client"]
    client = create_app(
        console_settings(pipeline["settings"].redis_url, store.url, tmp_path)
    ).test_client()
    for body in (replica_training("r-9", failed=True), video("v-9", failed=False),
                 document("d-9", "ready", 100)):  # fmt: skip
        assert receiver.post(f"/callbacks/{TOKEN}", json=body).status_code == 202
    wait_until(lambda: get(client, "/api/v1/documents/d-9").status_code == 200, timeout=30)
    wait_until(lambda: get(client, "/api/v1/videos/v-9").status_code == 200, timeout=30)
    wait_until(lambda: get(client, "/api/v1/replicas/r-9").status_code == 200, timeout=30)
    assert get(client, "/api/v1/replicas/r-9").json["status"] == "error"
    assert get(client, "/api/v1/videos/v-9").json["video_id"] == "v-9"
    assert get(client, "/api/v1/documents/d-9").json["progress"] == "100"
    assert get(client, "/api/v1/videos/v-none").status_code == 404


def test_deliveries_list_and_redeliver(api, sqlite_store, redis_client) -> None:
    from workers.store.models import DeliveryStatus, ForwardDelivery

    event_id = failed_shutdown(sqlite_store, "c-deliveries")
    with sqlite_store.session() as session:
        for name, status in (("crm", DeliveryStatus.FAILED), ("hook:audit", "delivered")):
            session.add(
                ForwardDelivery(
                    event_id=event_id, destination=name, source="callback", status=status,
                    attempts=3, last_error="503" if status == "failed" else None,
                )
            )  # fmt: skip
    listed = get(api, "/api/v1/deliveries").json
    assert [d["destination"] for d in listed["data"]] == ["hook:audit", "crm"]
    failed = get(api, "/api/v1/deliveries", status="failed").json["data"]
    assert [(d["destination"], d["event_id"], d["last_error"]) for d in failed] == [
        ("crm", event_id, "503")
    ]
    page = get(api, "/api/v1/deliveries", limit=1).json
    rest = get(api, "/api/v1/deliveries", limit=1, cursor=page["next_cursor"]).json
    assert [d["destination"] for d in page["data"] + rest["data"]] == ["hook:audit", "crm"]
    assert get(api, f"/api/v1/events/{event_id}").json["deliveries"][0]["destination"] in (
        "crm", "hook:audit",
    )  # fmt: skip

    queued = api.post(f"/api/v1/deliveries/{failed[0]['delivery_id']}/redeliver", headers=BEARER)
    assert queued.status_code == 202
    with sqlite_store.session() as session:
        row = session.get(ForwardDelivery, failed[0]["delivery_id"])
        assert (row.status, row.attempts) == ("pending", 0)
    assert redis_client.llen("forward") == 1  # the task, waiting for a worker
    assert api.post("/api/v1/deliveries/999/redeliver", headers=BEARER).status_code == 404


def test_the_console_reads_without_loading_destinations_or_notifiers() -> None:
    """The console imports the store and the queries; what sends (destinations, notifiers, the
    ledgers' write side) stays out of a process that only reads."""
    probe = (
        "import sys, console; "
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'workers.forwarding', 'workers.alerts', 'workers.destinations'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=base_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
