"""``/readyz`` warns when Redis may evict queued events, and says so at most once a minute."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from receiver import create_app
from schemas.settings import Settings
from tests.helpers import TOKEN
from tests.services import RedisServer


@pytest.fixture
def server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def readyz(url: str, tmp_path: Path):
    settings = Settings(callback_tokens=(TOKEN,), redis_url=url, spool_dir=str(tmp_path / "s"))
    return create_app(settings).test_client()


def config_calls(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_config", {}).get("calls", 0)


def test_noeviction_is_ready_without_warning(server, tmp_path) -> None:
    redis.Redis.from_url(server.url).config_set("maxmemory-policy", "noeviction")
    answer = readyz(server.url, tmp_path).get("/readyz")
    assert answer.status_code == 200
    assert answer.json["redis_maxmemory_policy"] == "noeviction"
    assert answer.json["warnings"] == []


def test_an_evicting_policy_is_a_warning_asked_once_a_minute(server, tmp_path) -> None:
    admin = redis.Redis.from_url(server.url)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    client = readyz(server.url, tmp_path)
    before = config_calls(admin)
    answers = [client.get("/readyz") for _ in range(5)]
    assert {a.status_code for a in answers} == {200}
    assert answers[0].json["status"] == "ready"
    assert answers[0].json["redis_maxmemory_policy"] == "allkeys-lru"
    assert "allkeys-lru" in answers[0].json["warnings"][0]
    assert "noeviction" in answers[0].json["warnings"][0]
    assert config_calls(admin) - before == 1  # cached: one CONFIG GET for five probes


def test_config_not_permitted_says_unknown(server, tmp_path) -> None:
    """Managed Redis often disables CONFIG; here an ACL user without it stands in."""
    admin = redis.Redis.from_url(server.url)
    admin.acl_setuser(
        "app", enabled=True, passwords=["+app-secret-pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-config"],
    )  # fmt: skip
    url = f"redis://app:app-secret-pw@127.0.0.1:{server.port}/0"
    answer = readyz(url, tmp_path).get("/readyz")
    assert answer.status_code == 200
    assert answer.json["redis_maxmemory_policy"] == "unknown"
    assert "CONFIG disabled" in answer.json["warnings"][0]
