"""Tavus's signed tool deliveries (a post-call action with ``auth.type: "hmac"``): the signature
checked at the door, then the delivery stored, shown, forwarded and hooked by a real worker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
import requests

from console import create_app as create_console
from receiver import create_app
from schemas.settings import Settings
from tests.console_fixtures import BEARER, answering, console_settings, sign_in
from tests.helpers import TOKEN, fixture, worker_env
from tests.services import ROOT, Web, Worker, wait_until
from tests.sinks import HttpSink, verified
from workers import queries
from workers.store.db import Store
from workers.store.models import Event

OLD_SECRET = "tavus-tool-secret-old-5f1c9e2a7b"
NEW_SECRET = "tavus-tool-secret-new-0d4e8a6c13"
FORWARD_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = fixture("tool_delivery_post_call")
CONVERSATION = "c123456"


def sign(raw: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def signed_post(client, raw: bytes, signature: str, path: str = "/callbacks"):
    headers = {"X-Tavus-Signature": signature}
    return client.post(path, data=raw, content_type="application/json", headers=headers)


def tool_settings(redis_url: str, database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        callback_tokens=(TOKEN,),
        tavus_signing_secrets=(OLD_SECRET, NEW_SECRET),
        redis_url=redis_url,
        database_url=database_url,
        spool_dir=str(tmp_path / "spool"),
    )


@pytest.fixture
def receiver(redis_url: str, sqlite_url: str, tmp_path: Path):
    return create_app(tool_settings(redis_url, sqlite_url, tmp_path)).test_client()


def test_a_signed_delivery_needs_no_token_and_either_secret_verifies(
    receiver, redis_client: redis.Redis
) -> None:
    first = signed_post(receiver, BODY, sign(BODY, NEW_SECRET))
    assert first.status_code == 202, first.json
    assert first.json["status"] == "accepted"
    # Rotation: tools still configured with the old secret are accepted too (a repeat here).
    again = signed_post(receiver, BODY, sign(BODY, OLD_SECRET).upper())
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    # The token route takes a signed delivery alike, by its signature.
    other = BODY.replace(b"tc_01J9ZK4Q7M", b"tc_02")
    assert (
        signed_post(receiver, other, sign(other, OLD_SECRET), f"/callbacks/{TOKEN}").status_code
        == 202
    )


@pytest.mark.parametrize(
    "signature",
    [
        sign(BODY, "not-the-secret-at-all-000000"),
        sign(BODY + b" ", NEW_SECRET),  # the exact bytes are signed: one more space fails
        "",
        "sha256=" + sign(BODY, NEW_SECRET),  # Tavus sends bare hex
        "zz\u00e9\u2603 not hex",
    ],
)
def test_a_bad_signature_is_401_and_nothing_is_queued(
    receiver, redis_client: redis.Redis, signature: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = redis_client.dbsize()
    # A token does not rescue a signature that fails.
    for path in ("/callbacks", f"/callbacks/{TOKEN}"):
        answer = signed_post(receiver, BODY, signature.encode("utf-8").decode("latin-1"), path)
        assert answer.status_code == 401
        assert answer.json["error"] == "bad_signature"
        assert OLD_SECRET not in answer.text and NEW_SECRET not in answer.text
    assert redis_client.dbsize() == before
    assert OLD_SECRET not in caplog.text and NEW_SECRET not in caplog.text


def test_unsigned_needs_the_token_as_before(receiver) -> None:
    unsigned = receiver.post("/callbacks", data=BODY, content_type="application/json")
    assert unsigned.status_code == 401 and unsigned.json["error"] == "unauthorized"
    tokened = receiver.post(f"/callbacks/{TOKEN}", data=BODY, content_type="application/json")
    assert tokened.status_code == 202
    basic = receiver.post(
        "/callbacks?kind=tool",
        data=BODY.replace(b"tc_01J9ZK4Q7M", b"tc_03"),
        content_type="application/json",
        headers={"Authorization": "Basic " + base64.b64encode(f"tavus:{TOKEN}".encode()).decode()},
    )
    assert basic.status_code == 202


def test_without_signing_secrets_every_signature_is_refused(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = tool_settings(redis_url, sqlite_url, tmp_path).with_overrides(
        tavus_signing_secrets=()
    )
    client = create_app(settings).test_client()
    assert signed_post(client, BODY, sign(BODY, NEW_SECRET)).status_code == 401


def test_a_signed_body_that_is_no_json_is_400_not_5xx(receiver) -> None:
    raw = b"\xff not json"
    answer = signed_post(receiver, raw, sign(raw, NEW_SECRET))
    assert answer.status_code == 400 and answer.json["error"] == "invalid_json"


HOOKS = """
import pathlib

from workers.hooks import on


@on("tool")
def note_tool(event):
    body = event.body
    seen = pathlib.Path(__file__).with_name("seen")
    with seen.open("a") as out:
        out.write(f"{event.kind} {event.conversation_id} {body['properties']['name']}\\n")
"""


@pytest.mark.integration
def test_signed_delivery_end_to_end_stored_shown_forwarded_and_hooked(
    redis_url: str, store: Store, tmp_path: Path
) -> None:
    (tmp_path / "tool_hooks.py").write_text(textwrap.dedent(HOOKS))
    sink = HttpSink().start()
    settings = tool_settings(redis_url, store.url, tmp_path)
    env = {
        "FORWARD_CRM_URL": sink.url,
        "FORWARD_CRM_SECRET": FORWARD_SECRET,
        "FORWARD_CRM_EVENTS": "tool",
        "TAVUS_HOOKS": "tool_hooks",
        "TAVUS_SIGNING_SECRETS": f"{OLD_SECRET},{NEW_SECRET}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
    }
    log = tmp_path / "worker.log"
    worker = Worker(worker_env(settings, **env), log, queues="events,forward,hooks").start()
    try:
        receiver = create_app(settings).test_client()
        forged = signed_post(receiver, BODY.replace(b"acme-42", b"evil-1"), sign(BODY, NEW_SECRET))
        assert forged.status_code == 401
        answer = signed_post(receiver, BODY, sign(BODY, NEW_SECRET))
        assert answer.status_code == 202, answer.json
        event_id = answer.json["event_id"]

        wait_until(lambda: len(sink.accepted()) == 1, timeout=60)
        forwarded = verified(sink.accepted(), FORWARD_SECRET)[0]
        assert forwarded.body == BODY  # the exact bytes Tavus sent
        seen = tmp_path / "seen"
        wait_until(seen.exists, timeout=60)
        assert seen.read_text() == f"tool {CONVERSATION} create_crm_note\n"

        def delivered() -> dict[str, str] | None:
            with store.session() as session:
                rows = queries.list_deliveries(session)
            shown = {d["destination"]: d["status"] for d in rows}
            return shown if set(shown.values()) == {"delivered"} and len(shown) == 2 else None

        assert wait_until(delivered, timeout=60) == {
            "crm": "delivered",
            "hook:tool_hooks.note_tool": "delivered",
        }
        with store.session() as session:
            events = session.query(Event).all()
            assert [(e.id, e.kind, e.status) for e in events] == [(event_id, "tool", "processed")]

        expected = {
            "tool_name": "create_crm_note",
            "tool_call_id": "tc_01J9ZK4Q7M",
            "arguments": {
                "crm_account": "acme-42",
                "summary": "Asked for a quote on 40 seats; follow up Tuesday.",
            },
        }
        record = conversation_json(settings)
        [delivery] = record["tool_deliveries"]
        assert {k: delivery[k] for k in expected} == expected
        assert [e["kind"] for e in record["events"]] == ["tool"]

        console = create_console(console_settings(redis_url, store.url, tmp_path)).test_client()
        api = console.get(f"/api/v1/conversations/{CONVERSATION}", headers=BEARER).json
        assert api["tool_deliveries"] == record["tool_deliveries"]
        sign_in(console)
        page = console.get(f"/console/conversations/{CONVERSATION}").get_data(as_text=True)
        assert "Tool deliveries" in page and "create_crm_note" in page and "acme-42" in page
    finally:
        worker.stop()
        sink.stop()
    assert OLD_SECRET not in log.read_text() and NEW_SECRET not in log.read_text()


def conversation_json(settings: Settings) -> dict:
    shown = subprocess.run(
        [sys.executable, "-m", "cli.main", "conversation", CONVERSATION, "--json"],
        cwd=ROOT, env=worker_env(settings), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.integration
def test_under_gunicorn_a_bad_signature_is_401_and_no_secret_reaches_the_log(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = tool_settings(redis_url, sqlite_url, tmp_path)
    env = worker_env(settings, TAVUS_SIGNING_SECRETS=f"{OLD_SECRET},{NEW_SECRET}")
    log = tmp_path / "web.log"
    web = answering(Web(env, log, workers=1).start())
    try:
        headers = {"Content-Type": "application/json"}
        for signature in (sign(BODY, "wrong-secret-000000000000"), "\u00e9".encode().hex() + "zz"):
            bad = requests.post(
                f"{web.url}/callbacks",
                data=BODY,
                headers={**headers, "X-Tavus-Signature": signature},
                timeout=30,
            )
            assert bad.status_code == 401 and bad.json()["error"] == "bad_signature"
        good = requests.post(
            f"{web.url}/callbacks",
            data=BODY,
            headers={**headers, "X-Tavus-Signature": sign(BODY, OLD_SECRET)},
            timeout=30,
        )
        assert good.status_code == 202, good.text
    finally:
        web.stop()
    text = log.read_text()
    assert "Worker serving" in text  # the log is the server's
    assert OLD_SECRET not in text and NEW_SECRET not in text


def test_simulate_ends_a_conversation_with_a_signed_post_call_action() -> None:
    """`tavus-callbacks simulate` with TAVUS_SIGNING_SECRETS: the conversation's last body is a
    post-call action, posted with the signature of its exact bytes; the others unsigned."""
    from cli import simulate

    sink = HttpSink().start()
    try:
        bodies = list(simulate.scenario("conversation", post_call=True))
        assert simulate.is_tool_delivery(bodies[-1])
        assert not any(simulate.is_tool_delivery(b) for b in bodies[:-1])
        list(simulate.post_all(f"{sink.url}/callbacks", bodies, signing_secret=NEW_SECRET))
        signed = [r for r in sink.received if "x-tavus-signature" in r.headers]
        assert len(signed) == 1 and len(sink.received) == len(bodies)
        assert signed[0].headers["x-tavus-signature"] == sign(signed[0].body, NEW_SECRET)
        assert json.loads(signed[0].body)["conversation_id"] == bodies[0]["conversation_id"]
    finally:
        sink.stop()
