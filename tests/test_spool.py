"""The spool: what the receiver does when Redis cannot take an event, and how it catches up.

Each test runs its own redis-server, because it stops it, fills it up or starts it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import redis

from receiver import create_app
from receiver.publisher import Publisher
from receiver.spool import Spool
from schemas.messages import EVENTS_QUEUE
from schemas.settings import Settings
from tests.helpers import TOKEN, fixture, queued
from tests.services import RedisServer, base_env, wait_until

URL = f"/callbacks/{TOKEN}"


@pytest.fixture
def server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


def make_settings(server: RedisServer, tmp_path: Path, interval: float = 0.2) -> Settings:
    return Settings(
        callback_tokens=(TOKEN,),
        redis_url=server.url,
        database_url=f"sqlite:///{tmp_path / 'events.db'}",
        spool_dir=str(tmp_path / "spool"),
        spool_drain_interval_seconds=interval,
    )


def conversation_event(n: int) -> bytes:
    body = orjson.loads(fixture("shutdown"))
    body["conversation_id"] = f"c-{n:04d}"
    return orjson.dumps(body)


def message(n: int, event_id: str | None = None) -> dict:
    """An event message as the intake builds it, for writing to the spool directly."""
    return {
        "event_id": event_id or f"00000000-0000-4000-8000-{n:012d}",
        "event_key": f"conversation:c-{n:04d}:system.shutdown:t",
        "kind": "conversation",
        "event_type": "system.shutdown",
        "conversation_id": f"c-{n:04d}",
        "received_at": 1.0 + n,
        "body": conversation_event(n).decode(),
        "errors": None,
        "source": "callback",
    }


def test_redis_down_spools_then_drains_in_order_when_it_is_back(server, tmp_path) -> None:
    settings = make_settings(server, tmp_path)
    client = create_app(settings).test_client()
    assert client.post(URL, data=conversation_event(0)).json["status"] == "accepted"
    server.stop()

    replies = [client.post(URL, data=conversation_event(n)) for n in range(1, 31)]
    quarantined = client.post(URL, data=b'{"hello": "world"}')
    assert {(r.status_code, r.json["status"]) for r in replies} == {(202, "spooled")}
    assert (quarantined.status_code, quarantined.json["status"]) == (422, "quarantined")
    spooled = sorted((tmp_path / "spool").glob("*.event"))
    assert len(spooled) == 31
    first = orjson.loads(spooled[0].read_bytes())
    assert first["event_id"] == replies[0].json["event_id"]
    assert first["body"] == conversation_event(1).decode()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["status"] == "degraded"
    assert ready.json["spool"] == {"events": 31, "writable": True}

    server.start()
    rdb = redis.Redis.from_url(server.url)
    wait_until(lambda: rdb.llen(EVENTS_QUEUE) == 32, timeout=20)
    ids = [m["event_id"] for m in queued(rdb)]
    expected = [r.json["event_id"] for r in replies] + [quarantined.json["event_id"]]
    assert ids[1:] == expected  # arrival order
    assert not list((tmp_path / "spool").glob("*.event"))
    assert client.get("/readyz").json["status"] == "ready"


def test_a_resend_spooled_twice_is_published_once(server, tmp_path) -> None:
    client = create_app(make_settings(server, tmp_path)).test_client()
    server.stop()
    first = client.post(URL, data=fixture("transcription_ready")).json
    again = client.post(URL, data=fixture("transcription_ready")).json
    assert first["status"] == again["status"] == "spooled"
    assert first["event_id"] != again["event_id"]

    server.start()
    rdb = redis.Redis.from_url(server.url)
    wait_until(lambda: not list((tmp_path / "spool").glob("*.event")), timeout=20)
    assert [m["event_id"] for m in queued(rdb)] == [first["event_id"]]
    later = client.post(URL, data=fixture("transcription_ready"))
    assert later.status_code == 200
    assert later.json == {"status": "duplicate", "event_id": first["event_id"]}


def test_redis_refusing_writes_when_full_is_spooled(server, tmp_path) -> None:
    """maxmemory with noeviction: Redis answers OOM to the claim+push; nothing is lost."""
    client = create_app(make_settings(server, tmp_path)).test_client()
    rdb = redis.Redis.from_url(server.url)
    rdb.config_set("maxmemory-policy", "noeviction")
    rdb.config_set("maxmemory", 1)
    reply = client.post(URL, data=fixture("shutdown"))
    assert (reply.status_code, reply.json["status"]) == (202, "spooled")
    rdb.config_set("maxmemory", 0)
    wait_until(lambda: rdb.llen(EVENTS_QUEUE) == 1, timeout=20)
    assert queued(rdb)[0]["event_id"] == reply.json["event_id"]


def test_concurrent_drainers_publish_each_event_once_in_order(server, tmp_path) -> None:
    spool = Spool(tmp_path / "spool")
    sent = [message(n) for n in range(300)]
    for item in sent:
        spool.put(item)
    spool.put(sent[7])  # a file published before a crash, whose delete was lost
    rdb = redis.Redis.from_url(server.url)
    settings = make_settings(server, tmp_path)
    env = base_env(REDIS_URL=server.url, SPOOL_DIR=settings.spool_dir, CALLBACK_TOKENS=TOKEN)
    command = [sys.executable, "-m", "cli.main", "spool", "drain", "--wait", "30"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE) for _ in range(2)]

    def drain_until_empty() -> None:
        publisher = Publisher(redis.Redis.from_url(server.url), 3600)
        wait_until(lambda: spool.drain(publisher.publish).complete, timeout=30)

    threads = [threading.Thread(target=drain_until_empty) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for process in processes:
        process.communicate(timeout=60)
        assert process.returncode == 0
    assert [m["event_id"] for m in queued(rdb)] == [m["event_id"] for m in sent]
    assert spool.size() == 0


def test_unreadable_file_is_moved_aside_not_lost(server, tmp_path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put(message(1))
    (spool.directory / "00000000000000000000-1-garbage.event").write_bytes(b"{trunc")
    publisher = Publisher(redis.Redis.from_url(server.url), 3600)
    report = spool.drain(publisher.publish)
    assert (report.published, report.rejected, report.remaining) == (1, 1, 0)
    assert (spool.directory / "rejected" / "00000000000000000000-1-garbage.event").exists()


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_cli_shows_the_spool_and_drains_it(server, tmp_path) -> None:
    spool = Spool(tmp_path / "spool")
    for n in range(5):
        spool.put(message(n))
    env = base_env(REDIS_URL=server.url, SPOOL_DIR=str(spool.directory), CALLBACK_TOKENS=TOKEN)
    status = json.loads(cli("spool", "status", "--json", env=env).stdout)
    assert status["events"] == 5 and status["oldest_age_seconds"] >= 0
    assert "5 events spooled" in cli("spool", "status", env=env).stdout

    server.stop()
    down = cli("spool", "drain", env=env)
    assert down.returncode != 0
    assert "0 published" in down.stdout and "5 remaining" in down.stdout
    assert "ConnectionError" in down.stderr

    server.start()
    up = cli("spool", "drain", env=env)
    assert up.returncode == 0, up.stderr
    assert "5 published, 0 duplicates, 0 rejected, 0 remaining" in up.stdout
    assert json.loads(cli("spool", "status", "--json", env=env).stdout)["events"] == 0
    assert redis.Redis.from_url(server.url).llen(EVENTS_QUEUE) == 5
