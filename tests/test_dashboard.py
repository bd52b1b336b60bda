"""The Grafana dashboard and the Prometheus rules against a live scrape: real gunicorn and a real
Celery worker (on every queue, forwarding to two real HTTP destinations: one answers 503 once,
the other refuses everything), a real Prometheus with deploy/prometheus's rules loaded. After
callbacks are posted, every panel's query returns data, every rule evaluates, and the alerts
this run deserves fire."""

from __future__ import annotations

import base64
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
import requests

from schemas.settings import Settings
from tests.helpers import DASHBOARD, RULE_FILES, TOKEN, fixture_json, worker_env
from tests.services import Prometheus, Web, Worker, free_port, wait_until
from tests.sinks import HttpSink
from workers.store.db import Store

pytestmark = pytest.mark.integration

METRICS_TOKEN = "metrics-token-0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BATCH = 4  # callbacks per batch; two batches, the second once Prometheus saw the first
# Grafana's own variables, as Grafana would fill them for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "${datasource}": ""}


def joined(n: int) -> bytes:
    body = fixture_json("replica_joined")
    body["conversation_id"] = f"cdashboard{n:04d}"
    return orjson.dumps(body)


def post_batch(web_url: str, first: int) -> None:
    for n in range(first, first + BATCH):
        answer = requests.post(f"{web_url}/callbacks/{TOKEN}", data=joined(n), timeout=10)
        assert answer.status_code == 202, answer.text


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, Grafana's variables filled."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_server) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("dashboard-run")
    redis.Redis.from_url(redis_server.url).flushall()
    database_url = f"sqlite:///{work / 'events.db'}"
    store = Store(database_url)
    store.upgrade()
    app_sink, broken_sink = HttpSink(statuses=(503,)), HttpSink(always=400)
    app_sink.headers = {"Retry-After": "1"}
    settings = Settings(
        callback_tokens=(TOKEN,), redis_url=redis_server.url, database_url=database_url
    )
    env = worker_env(
        settings,
        METRICS_TOKEN=METRICS_TOKEN,
        FORWARD_APP_URL=app_sink.url,
        FORWARD_APP_SECRET=SECRET,
        FORWARD_BROKEN_URL=broken_sink.url,
        FORWARD_BROKEN_SECRET=SECRET,
    )
    web_dir, worker_dir = work / "web-metrics", work / "worker-metrics"
    web_dir.mkdir()
    worker_port = free_port()
    web = Web(
        {**env, "PROMETHEUS_MULTIPROC_DIR": str(web_dir)}, work / "web.log", app="deploy.wsgi:app"
    )
    worker = Worker(
        {
            **env,
            "WORKER_METRICS_PORT": str(worker_port),
            "PROMETHEUS_MULTIPROC_DIR": str(worker_dir),
        },
        work / "worker.log",
        queues="events,storage,alerts,forward,hooks",
    )
    # The job names the rules expect (README "Metrics").
    prometheus = Prometheus(
        work,
        [
            {
                "job_name": "tavus-callbacks-web",
                "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
                "static_configs": [{"targets": [f"127.0.0.1:{web.port}"]}],
            },
            {
                "job_name": "tavus-callbacks-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
            },
        ],
        rule_files=RULE_FILES,
    )
    try:
        app_sink.start()
        broken_sink.start()
        web.start(ready_timeout=60)
        worker.start(ready_timeout=90)
        prometheus.start(ready_timeout=60)
        wait_until(lambda: prometheus.value('min(up{job=~"tavus-callbacks.*"})') == 1, 60, 0.5)
        post_batch(web.url, 0)
        # Counters with labels appear at their first count: a rate needs a second batch, posted
        # only once Prometheus holds the first one's counts from both jobs (a scrape that timed
        # out on a busy machine would otherwise show the web's counter first at its final value).
        failed = 'sum(tavus_callbacks_deliveries_total{destination="broken",outcome="failed"})'
        received = "sum(tavus_callbacks_received_total)"
        prometheus.wait_for(failed, BATCH, timeout=90)
        prometheus.wait_for(received, BATCH, timeout=90)
        post_batch(web.url, BATCH)
        prometheus.wait_for(failed, 2 * BATCH, timeout=90)
        prometheus.wait_for(received, 2 * BATCH, timeout=90)
        prometheus.wait_for(
            'sum(tavus_callbacks_deliveries_total{destination="app",outcome="delivered"})',
            2 * BATCH,
            timeout=90,
        )
        yield prometheus
    finally:
        for service in (prometheus, worker, web):
            service.stop()
        app_sink.stop()
        broken_sink.stop()
        store.dispose()


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(row["value"][1]) for row in result if math.isfinite(float(row["value"][1]))]


@pytest.mark.parametrize(("title", "expr"), panel_queries(), ids=lambda v: v[:50])
def test_every_dashboard_query_returns_data_from_the_live_scrape(
    live: Prometheus, title: str, expr: str
) -> None:
    # Recording rules and alerts evaluate on their own clock: give them a little time.
    try:
        wait_until(lambda: finite_values(live.query(expr)), timeout=90, interval=1)
    except TimeoutError:
        pytest.fail(f"panel {title!r}: no data (or only NaN) for {expr}")


def test_every_rule_evaluates_without_error(live: Prometheus) -> None:
    def rules() -> list[dict[str, Any]]:
        answer = requests.get(f"{live.url}/api/v1/rules", timeout=5).json()
        found = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
        return (
            found if all(rule.get("lastEvaluation", "").startswith("2") for rule in found) else []
        )

    found = wait_until(rules, timeout=90, interval=1)
    assert len(found) == 24
    assert {rule["health"] for rule in found} == {"ok"}, [
        (rule["name"], rule.get("lastError")) for rule in found if rule["health"] != "ok"
    ]


def test_the_run_fires_the_alerts_it_deserves_and_no_others(live: Prometheus) -> None:
    """The broken destination refused every delivery: dead letters and a failing destination.
    Nothing else is wrong, so nothing else fires."""

    def firing() -> set[tuple[str, str]]:
        rows = live.query('ALERTS{alertstate="firing"}')
        found = {(r["metric"]["alertname"], subject(r["metric"])) for r in rows}
        return found if len(found) >= 2 else set()

    found = wait_until(firing, timeout=90, interval=1)
    time.sleep(2)  # and nothing else joins them
    assert {(r["metric"]["alertname"]) for r in live.query("ALERTS")} == {
        "TavusCallbacksDeadLetters",
        "TavusCallbacksDestinationFailing",
    }
    assert found == {
        ("TavusCallbacksDeadLetters", "tavus.forward.deliver"),
        ("TavusCallbacksDestinationFailing", "broken"),
    }


def subject(labels: dict[str, str]) -> str:
    return labels.get("destination") or labels.get("task") or ""
