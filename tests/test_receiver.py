"""Every row of the intake's response table, against a real redis-server."""

from __future__ import annotations

import json

import orjson
import pytest

from receiver import create_app
from schemas.messages import EVENTS_QUEUE
from schemas.settings import Settings, SettingsError
from tests.helpers import TOKEN, fixture, queued
from tests.services import free_port, wait_until

URL = f"/callbacks/{TOKEN}"


def test_accepted_event_is_queued_with_its_raw_body(client, redis_client) -> None:
    response = client.post(URL, data=fixture("shutdown"))
    assert response.status_code == 202
    assert response.json["status"] == "accepted"
    [message] = queued(redis_client)
    assert message["event_id"] == response.json["event_id"]
    assert message["body"] == fixture("shutdown").decode()
    assert (message["kind"], message["event_type"]) == ("conversation", "system.shutdown")
    assert message["errors"] is None


def test_repeat_gets_200_duplicate_with_the_first_id(client, redis_client) -> None:
    first = client.post(URL, data=fixture("transcription_ready"))
    second = client.post(URL, data=fixture("transcription_ready"))
    assert second.status_code == 200
    assert second.json == {"status": "duplicate", "event_id": first.json["event_id"]}
    assert len(queued(redis_client)) == 1


def test_dedup_key_expires_after_its_ttl(client, redis_client) -> None:
    client.post(URL, data=fixture("shutdown"))
    [key] = redis_client.keys("tavus:seen:*")
    ttl = redis_client.ttl(key)
    assert 7 * 24 * 3600 - 5 < ttl <= 7 * 24 * 3600


@pytest.mark.parametrize("path", ["/callbacks/wrong-token-0123456789", "/callbacks"])
def test_wrong_or_missing_token_is_401_and_nothing_is_queued(client, redis_client, path) -> None:
    response = client.post(path, data=fixture("shutdown"))
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert redis_client.dbsize() == 0


def test_basic_auth_password_is_the_token(client, redis_client) -> None:
    response = client.post("/callbacks", data=fixture("shutdown"), auth=("tavus", TOKEN))
    assert response.status_code == 202
    wrong = client.post("/callbacks", data=fixture("guardrail"), auth=("tavus", "nope"))
    assert wrong.status_code == 401
    assert len(queued(redis_client)) == 1


def test_several_tokens_are_accepted_for_rotation(redis_url, sqlite_url) -> None:
    old, new = "old-token-0123456789abc", "new-token-0123456789abc"
    settings = Settings(callback_tokens=(old, new), redis_url=redis_url, database_url=sqlite_url)
    client = create_app(settings).test_client()
    assert client.post(f"/callbacks/{old}", data=fixture("shutdown")).status_code == 202
    assert client.post(f"/callbacks/{new}", data=fixture("guardrail")).status_code == 202


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": "\xff"}', "not valid JSON"),
    ],
)
def test_not_a_json_object_is_400(client, redis_client, body, message) -> None:
    response = client.post(URL, data=body)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_json"
    assert message in response.json["message"]
    assert redis_client.llen(EVENTS_QUEUE) == 0


def test_body_over_the_limit_is_413(redis_url, sqlite_url, redis_client) -> None:
    settings = Settings(
        callback_tokens=(TOKEN,), redis_url=redis_url, database_url=sqlite_url, max_body_bytes=2048
    )
    client = create_app(settings).test_client()
    body = json.dumps({"conversation_id": "c1", "event_type": "x", "pad": "a" * 4096})
    response = client.post(URL, data=body)
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"
    assert response.json["limit_bytes"] == 2048 and "2048 bytes" in response.json["message"]
    assert redis_client.llen(EVENTS_QUEUE) == 0


def test_default_limit_takes_a_long_transcript(client) -> None:
    body = orjson.loads(fixture("transcription_ready"))
    body["properties"]["transcript"] *= 4000  # 20,000 entries, about 1 MB
    assert client.post(URL, data=orjson.dumps(body)).status_code == 202


def test_no_tavus_callback_is_422_and_still_queued_as_quarantined(client, redis_client) -> None:
    response = client.post(URL, data=b'{"hello": "world"}')
    assert response.status_code == 422
    assert response.json["status"] == "quarantined"
    assert response.json["errors"]["_schema"]
    [message] = queued(redis_client)
    assert message["event_id"] == response.json["event_id"]
    assert message["errors"] == response.json["errors"]


def test_a_tavus_identity_with_drifted_properties_is_accepted(client) -> None:
    """The tolerant reader: the worker records what deviated as warnings."""
    body = {"conversation_id": "c1", "event_type": "system.shutdown", "properties": {}}
    assert client.post(URL, json=body).status_code == 202
    body = orjson.loads(fixture("transcription_ready"))
    body["properties"]["transcript"] = [{"content": "an entry without a role"}]
    assert client.post(URL, data=orjson.dumps(body)).status_code == 202


def test_a_conversation_callback_whose_identity_does_not_load_is_422(client) -> None:
    body = {"conversation_id": "", "event_type": "system.shutdown", "properties": {}}
    response = client.post(URL, json=body)
    assert response.status_code == 422
    assert "conversation_id" in response.json["errors"]


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_wrong_method_is_405_json(client, method) -> None:
    response = getattr(client, method)(URL)
    assert response.status_code == 405
    assert response.json["error"] == "method_not_allowed"


def test_content_type_is_ignored_when_the_body_is_json(client) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        body = orjson.loads(fixture("guardrail"))
        body["properties"]["guardrail"] = f"g-{content_type}"
        response = client.post(URL, data=orjson.dumps(body), content_type=content_type)
        assert response.status_code == 202


def test_unknown_kind_hint_is_400(client) -> None:
    response = client.post(URL + "?kind=invoice", data=fixture("shutdown"))
    assert response.status_code == 400
    assert response.json["error"] == "unknown_kind"


def test_kind_hint_is_applied(client, redis_client) -> None:
    body = {"replica_id": "r1", "status": "ready", "video_id": "v1"}
    assert client.post(URL + "?kind=replica", json=body).status_code == 202
    assert queued(redis_client)[0]["kind"] == "replica"


def test_redis_down_and_no_spool_is_503_json(sqlite_url, tmp_path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    (tmp_path / "not-a-directory").write_text("")
    settings = Settings(
        callback_tokens=(TOKEN,),
        redis_url=dead,
        database_url=sqlite_url,
        spool_dir=str(tmp_path / "not-a-directory" / "spool"),
    )
    client = create_app(settings).test_client()
    response = client.post(URL, data=fixture("shutdown"))
    assert response.status_code == 503
    assert response.json["error"] == "queue_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["status"] == "unavailable"
    assert client.get("/healthz").status_code == 200


def test_health_and_readiness(client) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["redis"] == "ok"
    assert ready.json["spool"] == {"events": 0, "writable": True}


def test_unknown_path_is_404_json(client) -> None:
    response = client.post("/nowhere", data=b"{}")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_refuses_to_start_without_a_token(redis_url) -> None:
    with pytest.raises(SettingsError, match="CALLBACK_TOKENS"):
        create_app(Settings(callback_tokens=(), redis_url=redis_url))
    with pytest.raises(SettingsError, match="at least 16"):
        create_app(Settings(callback_tokens=("short",), redis_url=redis_url))
    assert create_app(Settings(callback_tokens=(), redis_url=redis_url, dev_mode=True))


def test_guardrail_repeat_is_a_duplicate_only_within_its_window(client, redis_client) -> None:
    """Guardrails carry no id or time: a resend soon after is a repeat, a later one a trigger."""
    first = client.post(URL, data=fixture("guardrail"))
    again = client.post(URL, data=fixture("guardrail"))
    assert (first.status_code, again.json) == (
        202,
        {"status": "duplicate", "event_id": first.json["event_id"]},
    )
    [key] = redis_client.keys("tavus:seen:*")
    assert 0 < redis_client.ttl(key) <= 10
    redis_client.pexpire(key, 1)  # the window has passed
    wait_until(lambda: not redis_client.exists(key), timeout=5)
    later = client.post(URL, data=fixture("guardrail"))
    assert later.status_code == 202 and later.json["status"] == "accepted"
    stored_keys = [message["event_key"] for message in queued(redis_client)]
    assert len(stored_keys) == len(set(stored_keys)) == 2  # two triggers, two stored events
