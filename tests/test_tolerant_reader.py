"""The tolerant reader end to end: every documented example (the shared fixtures, ours, the
seed page's own examples) and a set of drifted variants posted to the real receiver, processed
by a real worker, and the store compared with what was sent: each stored once, none
quarantined or failed, warnings exactly where a body deviates from the documented shape."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from typing import Any

import orjson
import pytest

from tests.helpers import FIXTURES, TOKEN
from tests.services import ROOT, wait_until
from workers import queries
from workers.store.models import Event

pytestmark = pytest.mark.integration

URL = f"/callbacks/{TOKEN}"
SHARED = ROOT.parent / "shared"  # beside the checkout, as CI lays it out


def documented_examples() -> dict[str, dict[str, Any]]:
    """Every JSON example we hold, by where it comes from."""
    found = {}
    for folder in (FIXTURES, SHARED / "fixtures"):
        for path in sorted(folder.glob("*.json")):
            found[f"{folder.name}/{path.stem}"] = json.loads(path.read_text())
    seed = SHARED / "seed" / "tavus-callbacks-doc.txt"
    if seed.exists():
        for number, block in enumerate(_json_blocks(seed.read_text())):
            found[f"seed/{number}"] = block
    return found


def _json_blocks(text: str) -> list[dict[str, Any]]:
    """The page's examples: objects opened and closed by a brace alone on a line."""
    blocks, current = [], None
    for line in text.splitlines():
        if line == "{":
            current = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                # The docs' own samples are not all valid JSON: nothing to post then.
                with contextlib.suppress(ValueError):
                    blocks.append(json.loads("\n".join(current)))
                current = None
    return blocks


def conversation(event_type: str, properties: Any, n: int, **envelope: Any) -> dict[str, Any]:
    return {
        "conversation_id": f"c-drift-{n:02d}",
        "event_type": event_type,
        "message_type": "application",
        "timestamp": "2025-07-11T06:48:37.566057Z",
        "properties": properties,
        **envelope,
    }


# Drifted bodies: (body, the warning paths expected; empty: the drift is one we read as is).
DRIFTED = [
    # A renamed field: the call still ended, its reason unknown.
    (conversation("system.shutdown", {"reason": "participant_left_timeout"}, 1),
     {"properties.shutdown_reason"}),
    # A string where an array was documented.
    (conversation("application.transcription_ready", {"transcript": "user: hi"}, 2),
     {"properties.transcript"}),
    # An offset instead of Z, an entry with a field the docs do not name, epoch strings.
    (conversation("application.transcription_ready", {"transcript": [
        {"role": "user", "content": "hi", "timestamp": "1724858860.824457", "emotion": "calm"},
        {"role": "assistant", "content": "hello", "timestamp": 1724858861.5},
    ]}, 3, timestamp="2025-07-11T08:48:37.566057+02:00"), set()),
    # The video's date form on a conversation event.
    (conversation("system.replica_joined", {"replica_id": "r1"}, 4,
                  timestamp="2024-08-28 15:27:40.824457"), set()),
    # A recording without a location: kept, and verification will say so.
    (conversation("application.recording_ready", {"storage_provider": "s3"}, 5),
     {"properties"}),
    # A timestamp Tavus never sends, and properties of the wrong type.
    (conversation("system.replica_joined", ["r1"], 6, timestamp="soon"),
     {"timestamp", "properties"}),
    # A transcript entry without its role, beside a good one.
    (conversation("application.transcription_ready", {"transcript": [
        {"content": "no role"}, {"role": "user", "content": "hi"}]}, 7),
     {"properties.transcript.0.role"}),
    # Resources with a mistyped status or progress.
    ({"video_id": "v-drift", "status": 3, "updated_at": "2024-08-28 15:29:19.802670"},
     {"status"}),
    ({"replica_id": "r-drift", "status": "ready", "error_message": ["x"]}, {"error_message"}),
]  # fmt: skip


def post(client: Any, body: dict[str, Any]) -> int:
    return client.post(URL, data=orjson.dumps(body)).status_code


def stored(store: Any, sent: set[str]) -> list[Event]:
    def check() -> list[Event] | None:
        with store.session() as session:
            rows = list(session.query(Event))
        done = [row for row in rows if row.status != "received"]
        return rows if len(rows) >= len(sent) and len(done) == len(rows) else None

    try:
        return wait_until(check, timeout=60, interval=0.2)
    except TimeoutError:
        with store.session() as session:
            bodies = {row.body: row.status for row in session.query(Event)}
        missing = [body for body in sent if body not in bodies]
        waiting = [body for body, status in bodies.items() if status == "received"]
        raise AssertionError({"missing": missing, "waiting": waiting}) from None


def test_every_documented_example_and_drifted_variant_is_processed(pipeline) -> None:
    client, store = pipeline["client"], pipeline["store"]
    examples = documented_examples()
    # The shared fixtures are ours too, and the seed's examples the same events: a repeat (the
    # same key) answers 200 "duplicate" and is not stored twice.
    answers = {name: post(client, body) for name, body in examples.items()}
    assert set(answers.values()) <= {200, 202}, answers
    drifted = [copy.deepcopy(body) for body, _ in DRIFTED]
    assert [post(client, body) for body in drifted] == [202] * len(drifted)

    accepted = [body for name, body in examples.items() if answers[name] == 202]
    sent = {orjson.dumps(body).decode() for body in [*accepted, *drifted]}
    rows = stored(store, sent)
    assert {row.body for row in rows} == sent  # each stored once, byte for byte
    examples = {name: body for name, body in examples.items() if answers[name] == 202}
    assert {row.status for row in rows} <= {"processed", "unhandled"}, [
        (row.body[:80], row.status, row.errors, row.last_error)
        for row in rows
        if row.status not in ("processed", "unhandled")
    ]
    warned = {row.body: set(row.warnings or {}) for row in rows}
    for name, body in examples.items():
        text = orjson.dumps(body).decode()
        if "<timestamp>" in text:  # the page's structure, a placeholder for its date
            assert warned[text] == {"timestamp"}, name
        else:
            assert warned[text] == set(), (name, warned[text])
    for body, expected in DRIFTED:
        assert warned[orjson.dumps(body).decode()] == expected, body

    with store.session() as session:
        ended = queries.conversation_record(session, "c-drift-01")
        transcript = queries.conversation_record(session, "c-drift-02")
        timed = queries.conversation_record(session, "c-drift-03")
        document = queries.resource_record(session, "document", "d8-5c71baca86fc")
    assert (ended["status"], ended["shutdown_reason"]) == ("ended", None)  # ended, reason unknown
    assert ended["warnings"][0]["warnings"]["properties.shutdown_reason"]
    assert transcript["transcript"] == [{"role": None, "content": "user: hi"}]
    assert timed["events"][0]["occurred_at"] == "2025-07-11T06:48:37.566057+00:00"
    assert (document["status"], document["status_at"]) == ("ready", "2024-01-01T12:05:00+00:00")

    # What a person runs: the events taken with warnings, and only those.
    env = {"DATABASE_URL": store.url, "PATH": "/usr/bin:/bin"}
    listed = subprocess.run(
        [sys.executable, "-m", "cli.main", "events", "--warnings", "--json", "--limit", "500"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    shown = {row["event_id"] for row in orjson.loads(listed.stdout)}
    assert shown == {row.id for row in rows if row.warnings}
