"""Metrics: ``/metrics`` behind METRICS_TOKEN, and a real Prometheus server scraping real
gunicorn (several workers, multiprocess mode) and a real Celery worker's WORKER_METRICS_PORT
through a run; Flower, from PyPI, watching the same workers through their task events."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
import requests

from console.metrics import create_metrics_app
from receiver import create_app
from schemas.settings import (
    MULTIPROC_DIR_VARIABLE,
    Settings,
    SettingsError,
    prepare_multiprocess_dir,
)
from tests.helpers import TOKEN, fixture_json, worker_env
from tests.services import Flower, Prometheus, Web, Worker, free_port, wait_until
from workers.store.db import Store

METRICS_TOKEN = "metrics-token-0123456789abcdef"
PROCESSED = 6  # valid callbacks in the run; plus one quarantined, two 401 and one 400


def joined(n: int) -> bytes:
    body = fixture_json("replica_joined")
    body["conversation_id"] = f"cmetrics{n:04d}"
    body["properties"]["replica_id"] = "rmetrics"
    return orjson.dumps(body)


# --- the endpoint ------------------------------------------------------------------------------


@pytest.fixture
def metrics_settings(settings: Settings, sqlite_url: str) -> Settings:
    Store(sqlite_url).upgrade()
    return settings.with_overrides(metrics_token=METRICS_TOKEN)


def scrape(client: Any, token: str | None = METRICS_TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/metrics", headers=headers)


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789abcdef", METRICS_TOKEN[:-1]])
def test_metrics_token_guards_the_endpoint(metrics_settings: Settings, token: str | None) -> None:
    response = scrape(create_metrics_app(metrics_settings).test_client(), token)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert METRICS_TOKEN not in response.get_data(as_text=True)


def test_no_token_or_secret_appears_in_the_exposition(metrics_settings: Settings) -> None:
    secret_redis = metrics_settings.with_overrides(
        redis_url=metrics_settings.redis_url.replace("redis://", "redis://:hunter2secret@")
    )
    receiver = create_app(metrics_settings).test_client()
    assert receiver.post(f"/callbacks/{TOKEN}", data=joined(1)).status_code == 202
    assert receiver.post("/callbacks/wrong-token-0123456789", data=joined(2)).status_code == 401
    for settings in (metrics_settings, secret_redis):
        response = scrape(create_metrics_app(settings).test_client())
        assert response.status_code == 200
        assert response.mimetype == "text/plain"
        text = response.get_data(as_text=True)
        assert 'tavus_callbacks_received_total{code="202",kind="conversation"}' in text
        for secret in (TOKEN, METRICS_TOKEN, "hunter2secret", "wrong-token-0123456789"):
            assert secret not in text


def test_without_a_token_configured_metrics_are_open(settings: Settings, sqlite_url) -> None:
    Store(sqlite_url).upgrade()
    assert scrape(create_metrics_app(settings).test_client(), None).status_code == 200


def test_queue_lengths_and_unreachable_sources(metrics_settings: Settings, redis_url) -> None:
    client = redis.Redis.from_url(redis_url)
    client.lpush("storage", b"x", b"y")
    client.hset("unacked", "tag", b"z")
    text = scrape(create_metrics_app(metrics_settings).test_client()).get_data(as_text=True)
    assert 'tavus_callbacks_queue_messages{queue="storage"} 2.0' in text
    assert 'tavus_callbacks_queue_messages{queue="hooks"} 0.0' in text
    assert "tavus_callbacks_queue_unacked_messages 1.0" in text
    down = metrics_settings.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = scrape(create_metrics_app(down).test_client())
    assert response.status_code == 200  # a source down is a metric, not a failed scrape
    text = response.get_data(as_text=True)
    assert 'tavus_callbacks_source_up{source="redis"} 0.0' in text
    assert 'tavus_callbacks_source_up{source="store"} 1.0' in text


def test_redis_down_counts_publish_failures_spool_writes_and_spool_size(
    sqlite_url: str, tmp_path
) -> None:
    Store(sqlite_url).upgrade()
    settings = Settings(
        callback_tokens=(TOKEN,),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        database_url=sqlite_url,
        spool_dir=str(tmp_path / "spool"),
        spool_drain_interval_seconds=0,  # keep what is spooled, to be counted
    )
    receiver = create_app(settings).test_client()
    metrics = create_metrics_app(settings).test_client()

    def value(name: str) -> float:
        for line in metrics.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    failures = value("tavus_callbacks_publish_failures_total")
    written = value('tavus_callbacks_spool_writes_total{outcome="written"}')
    for n in range(2):
        reply = receiver.post(f"/callbacks/{TOKEN}", data=joined(n))
        assert reply.status_code == 202 and reply.json["status"] == "spooled"
    assert value("tavus_callbacks_publish_failures_total") >= failures + 1
    assert value('tavus_callbacks_spool_writes_total{outcome="written"}') == written + 2
    assert value("tavus_callbacks_spool_events") == 2
    assert value("tavus_callbacks_spool_oldest_age_seconds") > 0


def test_metrics_settings_are_checked_and_the_token_is_a_secret(tmp_path, monkeypatch) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"METRICS_TOKEN": "short-secret"})
    assert "short-secret" not in str(refused.value)
    with pytest.raises(SettingsError):
        Settings.from_env({"WORKER_METRICS_PORT": "70000"})
    settings = Settings.from_env(
        {"METRICS_TOKEN": METRICS_TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    assert METRICS_TOKEN in settings.secrets() and METRICS_TOKEN not in repr(settings)
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_DIR_VARIABLE, "")  # restored after the test
    assert prepare_multiprocess_dir(settings, "web") == str(tmp_path)
    assert os.environ[MULTIPROC_DIR_VARIABLE] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# --- a real Prometheus through a run -----------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[dict[str, Any]]:
    """Web (3 gunicorn workers) and Prometheus up; callbacks posted while no worker runs; then
    a worker (and Flower) started, and everything processed. Tests read what Prometheus saw."""
    work = tmp_path_factory.mktemp("metrics-run")
    redis.Redis.from_url(redis_server.url).flushall()
    database_url = f"sqlite:///{work / 'events.db'}"
    store = Store(database_url)
    store.upgrade()
    web_dir, worker_dir = work / "web-metrics", work / "worker-metrics"
    web_dir.mkdir()
    (web_dir / "counter_999999.db").write_bytes(b"left by an earlier start")
    settings = Settings(
        callback_tokens=(TOKEN,), redis_url=redis_server.url, database_url=database_url
    )
    worker_port = free_port()
    env = worker_env(settings, METRICS_TOKEN=METRICS_TOKEN, PROMETHEUS_MULTIPROC_DIR=str(web_dir))
    web = Web(env, work / "web.log", workers=3, app="deploy.wsgi:app")
    prometheus = Prometheus(
        work,
        [
            {
                "job_name": "web",
                "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
                "static_configs": [{"targets": [f"127.0.0.1:{web.port}"]}],
            },
            {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    )
    worker_env_ = {
        **env,
        "WORKER_METRICS_PORT": str(worker_port),
        "PROMETHEUS_MULTIPROC_DIR": str(worker_dir),
    }
    worker = Worker(worker_env_, work / "worker.log", concurrency=2, heartbeat=True)
    flower = Flower(env, work / "flower.log", basic_auth="ops:flower-password")
    try:
        web.start(ready_timeout=60)
        prometheus.start(ready_timeout=60)
        wait_until(lambda: prometheus.value('up{job="web"}') == 1, timeout=60, interval=0.5)
        codes = [post(web.url, f"/callbacks/{TOKEN}", joined(n)) for n in range(PROCESSED)]
        codes.append(post(web.url, f"/callbacks/{TOKEN}", b'{"hello": "world"}'))
        codes += [post(web.url, "/callbacks/wrong-token-0123456789", joined(0)) for _ in range(2)]
        codes.append(post(web.url, f"/callbacks/{TOKEN}", b"[1, 2"))
        assert codes == [202] * PROCESSED + [422, 401, 401, 400]
        queued = PROCESSED + 1
        prometheus.wait_for('tavus_callbacks_queue_messages{queue="events"}', queued)
        time.sleep(3)  # a few scrapes with the workers stopped and the queue full
        stopped_until = time.time()
        flower.start(ready_timeout=60)
        worker.start(ready_timeout=90)
        prometheus.wait_for('tavus_callbacks_queue_messages{queue="events"}', 0, timeout=90)
        prometheus.wait_for(
            'sum(tavus_callbacks_events_processed_total{outcome="processed"})', PROCESSED, 90
        )
        yield {
            "prometheus": prometheus,
            "flower": flower,
            "worker": worker,
            "web_url": web.url,
            "web_dir": web_dir,
            "worker_dir": worker_dir,
            "stopped_until": stopped_until,
            "queued": queued,
        }
    finally:
        for service in (flower, worker, prometheus, web):
            service.stop()
        store.dispose()


def post(base_url: str, path: str, body: bytes) -> int:
    return requests.post(base_url + path, data=body, timeout=10).status_code


@pytest.mark.integration
def test_prometheus_counts_callbacks_by_status_across_gunicorn_workers(run) -> None:
    prometheus = run["prometheus"]
    by_code = {
        row["metric"]["code"]: float(row["value"][1])
        for row in prometheus.query("sum by (code) (tavus_callbacks_received_total)")
    }
    assert by_code == {"202": PROCESSED, "422": 1, "401": 2, "400": 1}
    kinds = prometheus.query('tavus_callbacks_received_total{code="202"}')
    assert {row["metric"]["kind"] for row in kinds} == {"conversation"}
    # Every answer was timed, and several gunicorn workers counted into the one directory,
    # which gunicorn's start wiped.
    assert prometheus.value("sum(tavus_callbacks_ack_duration_seconds_count)") == PROCESSED + 4
    assert prometheus.value("sum(tavus_callbacks_ack_duration_seconds_bucket{le='10.0'})") == (
        PROCESSED + 4
    )
    counters = list(run["web_dir"].glob("counter_*.db"))
    assert len(counters) >= 2, counters
    assert not (run["web_dir"] / "counter_999999.db").exists()


@pytest.mark.integration
def test_prometheus_sees_events_processed_by_outcome_from_the_worker(run) -> None:
    prometheus = run["prometheus"]
    # The worker's last events may land after the scrape before: wait for one that has them.
    prometheus.wait_for("sum(tavus_callbacks_event_processing_seconds_count)", PROCESSED + 1)
    outcomes = {
        (row["metric"]["kind"], row["metric"]["outcome"]): float(row["value"][1])
        for row in prometheus.query("tavus_callbacks_events_processed_total")
    }
    assert outcomes == {
        ("conversation", "processed"): PROCESSED,
        ("unclassified", "quarantined"): 1,
    }
    assert prometheus.value("sum(tavus_callbacks_event_processing_seconds_count)") == PROCESSED + 1
    assert prometheus.value('up{job="worker"}') == 1
    # The pool's children counted; the main process served their files.
    assert list(run["worker_dir"].glob("*.db"))


@pytest.mark.integration
def test_queue_length_rises_while_workers_are_stopped_and_falls_after(run) -> None:
    prometheus = run["prometheus"]
    query = 'tavus_callbacks_queue_messages{queue="events"}'
    while_stopped = prometheus.series(query, run["stopped_until"] - 3, run["stopped_until"])
    assert while_stopped and min(while_stopped) == run["queued"]
    assert prometheus.value(query) == 0
    assert prometheus.value("tavus_callbacks_failed_events") == 0
    assert prometheus.value('tavus_callbacks_failed_deliveries{ledger="alert"}') == 0
    ages = prometheus.series(
        "tavus_callbacks_oldest_pending_event_age_seconds",
        run["stopped_until"] - 2,
        run["stopped_until"],
    )
    assert ages and min(ages) > 0  # the events waited
    assert prometheus.value("tavus_callbacks_oldest_pending_event_age_seconds") == 0


@pytest.mark.integration
def test_flower_lists_our_tasks_and_worker(run) -> None:
    """Runs last: it posts two more callbacks, once Flower has been watching for a while."""
    flower, web_url = run["flower"], run["web_url"]
    auth = ("ops", "flower-password")
    # The worker sends no task events until a monitor asks: Flower does, every 5 s.
    enabled = "Events of group {task} enabled by remote."
    wait_until(lambda: enabled in run["worker"].output(), timeout=15, interval=0.5)
    for n in (100, 101):
        assert post(web_url, f"/callbacks/{TOKEN}", joined(n)) == 202

    def tasks() -> dict[str, Any]:
        answer = requests.get(f"{flower.url}/api/tasks", auth=auth, timeout=10)
        answer.raise_for_status()
        found = answer.json()
        done = [t for t in found.values() if t.get("state") == "SUCCESS"]
        return found if len(done) >= 2 else {}

    found = wait_until(tasks, timeout=30, interval=0.5)
    assert {task["name"] for task in found.values()} == {"tavus.events.process"}

    def workers() -> list[str]:
        url = f"{flower.url}/api/workers?refresh=1"  # asks the workers (celery inspect)
        answer = requests.get(url, auth=auth, timeout=30)
        return [name for name in answer.json() if name.startswith("test-")]

    assert wait_until(workers, timeout=30, interval=1)
    assert requests.get(f"{flower.url}/api/tasks", timeout=10).status_code == 401
