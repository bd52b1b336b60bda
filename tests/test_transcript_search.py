"""Transcript search on SQLite and on PostgreSQL: real transcription_ready callbacks go through
the receiver and a real Celery worker, and are then found by what was said, through the read API
(``GET /api/v1/conversations?q=``) and the CLI (``conversations --search``). What is erased or
replaced is not found any more."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, update

from console import create_app
from tests.console_fixtures import BEARER, console_settings
from tests.helpers import TOKEN, transcript_said, worker_env
from tests.services import wait_until
from workers.store.db import MIGRATIONS, Store
from workers.store.models import Conversation, Event
from workers.store.search import Match, search, terms

pytestmark = pytest.mark.integration

SAID = {
    "c-whale": [
        {"role": "system", "content": "You are a marine biologist. Mention the blue whale."},
        {"role": "user", "content": "Hi, I have a question about krill."},
        {"role": "assistant", "content": "The blue whale eats about four tonnes of krill a day."},
    ],
    "c-order": [
        {"role": "user", "content": "Where is my order? The order number is 4411."},
        {"role": "assistant", "content": "Your order ships tomorrow."},
    ],
    "c-mention": [
        {"role": "user", "content": "My cousin once saw a whale, I think it was blue."},
    ],
    "c-long": [
        {
            "role": "assistant",
            "content": " ".join(f"filler{n}" for n in range(40))
            + " and then a narwhal surfaced beside the boat "
            + " ".join(f"padding{n}" for n in range(40)),
        }
    ],
    "c-song": [
        {"role": "user", "content": "Whale song."},
        {"role": "assistant", "content": "Whale song, whale song, whale song!"},
    ],
}


def send(pipeline: dict, conversation_id: str, entries: list[dict], at: datetime) -> None:
    reply = pipeline["client"].post(
        f"/callbacks/{TOKEN}", data=orjson.dumps(transcript_said(conversation_id, entries, at))
    )
    assert reply.status_code == 202, reply.json


def processed(store, count: int) -> None:
    def done() -> bool:
        with store.session() as session:
            events = session.query(Event).all()
        return len(events) == count and all(e.status == "processed" for e in events)

    wait_until(done, timeout=30)


@pytest.fixture
def said(pipeline: dict) -> dict:
    """The three conversations above, stored by the worker from real callbacks."""
    at = datetime.now(UTC) - timedelta(minutes=5)
    for conversation_id, entries in SAID.items():
        send(pipeline, conversation_id, entries, at)
    processed(pipeline["store"], len(SAID))
    return pipeline


@pytest.fixture
def api(said: dict, redis_url: str, tmp_path: Path):
    app = create_app(console_settings(redis_url, said["store"].url, tmp_path))
    return app.test_client()


def found(api, q: str, **params) -> dict:
    reply = api.get("/api/v1/conversations", query_string={"q": q, **params}, headers=BEARER)
    assert reply.status_code == 200, reply.json
    return reply.json


def ids(page: dict) -> list[str]:
    return [row["conversation_id"] for row in page["data"]]


def test_the_api_finds_a_phrase_best_first_with_the_line_that_said_it(api) -> None:
    page = found(api, "blue whale")
    assert sorted(ids(page)) == ["c-mention", "c-whale"]  # both words in one line, any order
    best = next(row for row in page["data"] if row["conversation_id"] == "c-whale")
    assert best["status"] and best["first_seen_at"]  # the usual summary, plus the match
    match = best["match"]
    assert (match["line"], match["role"]) == (2, "assistant")  # not the system prompt (line 0)
    marked = [match["snippet"][start:end] for start, end in match["highlights"]]
    assert [word.lower() for word in marked] == ["blue", "whale"]
    assert "four tonnes of krill" in match["snippet"]

    assert ids(found(api, '"blue whale"')) == ["c-whale"]  # a quoted phrase: in that order
    assert ids(found(api, "orders")) == ["c-order"]  # stemmed: "orders" finds "order"
    assert ids(found(api, "marine biologist")) == []  # the system prompt is not what was said
    assert ids(found(api, "whale pizza")) == []  # every word must be in the line
    assert found(api, "order")["data"][0]["match"]["line"] == 0  # the line saying it twice
    whale = found(api, "whale")["data"]
    assert whale[0]["conversation_id"] == "c-song"  # said most, in the fewest words
    assert whale[0]["match"]["line"] == 1 and len(whale) == 3


def test_a_long_line_is_cut_around_the_match_and_says_so(api) -> None:
    match = found(api, "narwhal")["data"][0]["match"]
    snippet = match["snippet"]
    assert snippet.startswith("…") and snippet.endswith("…")
    assert "narwhal surfaced" in snippet and len(snippet.split()) <= 30
    assert [snippet[start:end] for start, end in match["highlights"]] == ["narwhal"]


def test_search_pages_and_filters_like_the_list(api) -> None:
    first = found(api, "blue whale", limit=1)
    assert len(first["data"]) == 1 and first["next_cursor"]
    second = found(api, "blue whale", limit=1, cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    assert sorted(ids(first) + ids(second)) == ["c-mention", "c-whale"]
    assert ids(found(api, "whale", status="ended")) == []  # no shutdown arrived: not ended
    assert len(found(api, "whale", status="pending")["data"]) == 3


SYNTAX = ("NEAR(blue whale)", "blue OR", "*", '"', "whale)", "-whale", "^blue", "AND", "!!!", "a:b")


def test_what_search_engines_treat_as_syntax_is_only_text(api) -> None:
    for q in SYNTAX:
        page = found(api, q)  # never a 500: every word is matched as text
        assert all(row["match"]["snippet"] for row in page["data"]), q
    assert ids(found(api, "whale)")) == ids(found(api, "whale"))


def test_bad_search_parameters_are_422_with_a_message(api) -> None:
    reply = api.get("/api/v1/conversations", query_string={"q": "w" * 201}, headers=BEARER)
    assert reply.status_code == 422 and "q" in reply.json["errors"]
    events_cursor = api.get("/api/v1/conversations?limit=1", headers=BEARER).json["next_cursor"]
    reply = api.get(
        "/api/v1/conversations",
        query_string={"q": "whale", "cursor": events_cursor},
        headers=BEARER,
    )
    assert reply.status_code == 422 and "cursor" in reply.json["errors"]


def test_the_openapi_document_describes_q(api) -> None:
    document = api.get("/api/v1/openapi.json").json
    names = [p["name"] for p in document["paths"]["/conversations"]["get"]["parameters"]]
    assert {"q", "status", "since", "limit", "cursor"} <= set(names)


def test_a_newer_transcript_replaces_what_is_found(said: dict, api) -> None:
    later = datetime.now(UTC)
    send(said, "c-order", [{"role": "user", "content": "Please cancel the subscription."}], later)
    processed(said["store"], len(SAID) + 1)
    assert ids(found(api, "order number")) == []
    assert ids(found(api, "cancel subscription")) == ["c-order"]


def test_nothing_erased_is_found(said: dict, api) -> None:
    """Whatever removes a transcript removes what search finds: the database's triggers keep
    the index, so a purge or an erasure needs no step of its own."""
    with said["store"].session() as session:
        session.execute(
            update(Conversation)
            .where(Conversation.conversation_id == "c-whale")
            .values(transcript=None)
        )
        session.execute(delete(Event).where(Event.conversation_id == "c-mention"))
        session.execute(delete(Conversation).where(Conversation.conversation_id == "c-mention"))
    assert ids(found(api, "blue whale")) == []
    assert ids(found(api, "krill")) == []
    assert ids(found(api, "whale")) == ["c-song"]
    assert ids(found(api, "order")) == ["c-order"]  # the rest is still there


def cli(said: dict, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(said["settings"])
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "conversations", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_cli_finds_what_was_said(said: dict, tmp_path: Path) -> None:
    shown = cli(said, "--search", "blue whale")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 4  # two conversations, each a heading and its line
    at = lines.index("c-whale  pending  line 2")
    assert lines[at + 1] == "  assistant: The blue whale eats about four tonnes of krill a day."

    as_json = json.loads(cli(said, "--search", "krill", "--json").stdout)
    assert [row["conversation_id"] for row in as_json] == ["c-whale"]
    assert as_json[0]["match"]["role"] == "user"

    listed = cli(said)  # without --search: every conversation, newest first
    assert {"c-whale", "c-order", "c-mention"} <= set(listed.stdout.split())
    assert cli(said, "--search", "nobody said this").stdout.strip() == "no conversations"
    too_long = cli(said, "--search", "w" * 201)
    assert too_long.returncode == 1 and "--search" in too_long.stderr
    assert "Traceback" not in too_long.stderr


def migrate(store: Store, revision: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = store.engine
    (command.downgrade if down else command.upgrade)(config, revision)


def test_transcripts_stored_before_the_migration_are_found_after_it(database_url: str) -> None:
    store = Store(database_url)
    try:
        migrate(store, "0009")
        migrate(store, "-1", down=True)  # and back: the downgrade leaves no trace
        now = datetime.now(UTC)
        with store.session() as session:
            session.add(
                Conversation(
                    conversation_id="c-old",
                    first_seen_at=now,
                    updated_at=now,
                    transcript=SAID["c-whale"],
                )
            )
        migrate(store, "0009")
        with store.session() as session:
            hits = search(session, "krill tonnes", limit=5)
        assert [(c.conversation_id, m.line) for c, m in hits] == [("c-old", 2)]
    finally:
        store.dispose()


def test_terms_keep_phrases_and_drop_what_holds_no_word() -> None:
    assert terms('blue "the whale" !! krill"') == ["blue", "the whale", "krill"]
    assert terms('"" * ()') == []


def test_a_match_turns_the_marks_into_offsets_and_says_what_it_left_out() -> None:
    line = "I saw a blue whale today"
    match = Match.of(3, "user", " a \ue000blue\ue001 \ue000whale\ue001", line)
    assert match.snippet == "…a blue whale…"
    assert [match.snippet[start:end] for start, end in match.highlights] == ["blue", "whale"]
    whole = Match.of(0, None, "\ue000whale\ue001 song", "whale song")
    assert (whole.snippet, whole.highlights) == ("whale song", [(0, 5)])
