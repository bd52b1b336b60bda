"""The Prometheus rules and the Grafana dashboard shipped in deploy/: valid for promtool, their
unit tests pass (and fail when a rule is broken), and every series they read is one the service
exports today.

The dashboard's queries are run against a live scrape in tests/test_dashboard.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from console.metrics import create_metrics_app
from schemas.settings import Settings
from tests.helpers import DASHBOARD, RULE_FILES
from tests.services import ROOT
from workers import metrics as worker_metrics  # registers the workers' instruments
from workers.store.db import Store

RULES_DIR = ROOT / "deploy" / "prometheus"
UNIT_TESTS = ("tests.yml", "tests-daily.yml")  # every minute; every 5 minutes over days
PROMTOOL = "/usr/bin/promtool"  # Debian's prometheus package, installed by scripts/test

# Prometheus's own series: a target's scrape result and the alerts' state.
PROMETHEUS_OWN = {"up", "ALERTS"}
SERIES = re.compile(r"\b(tavus_callbacks_[a-z0-9_]+|up|ALERTS)\b(?!:)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120)


def rule_expressions() -> list[str]:
    return [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", ())]


def exported_series(settings: Settings) -> set[str]:
    """Every series name a scrape of the web and a worker can hold, from their own registries:
    the web's /metrics (intake counters, pipeline gauges) and the workers' instruments."""
    Store(settings.database_url).upgrade()
    text = create_metrics_app(settings).test_client().get("/metrics").get_data(as_text=True)
    assert worker_metrics.EVENTS_PROCESSED._name in text  # the workers' instruments are in it
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(RULE_FILES)


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", *(RULES_DIR / name for name in UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(UNIT_TESTS)


@pytest.mark.parametrize(
    ("broken", "fix"),
    [
        # the very first dead letter (a new series) would go unseen
        ("          or sum by (task) (\n", "          or 0 * sum by (task) (\n"),
        # a silence at a quiet time of day would page
        ("offset 1d)) >= 5", "offset 1d)) >= 0"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, broken: str, fix: str) -> None:
    for path in (*RULE_FILES, *(RULES_DIR / name for name in UNIT_TESTS)):
        shutil.copy(path, tmp_path / path.name)
    alerts = tmp_path / "alerts.yml"
    assert broken in alerts.read_text()
    alerts.write_text(alerts.read_text().replace(broken, fix, 1))
    tested = promtool("test", "rules", *(tmp_path / name for name in UNIT_TESTS))
    assert tested.returncode != 0 and "FAILED" in tested.stderr


def test_rules_and_dashboard_read_only_series_the_service_exports(settings: Settings) -> None:
    exported = exported_series(settings)
    read = {
        name
        for expr in (*rule_expressions(), *dashboard_expressions())
        for name in SERIES.findall(expr)
    }
    assert read - exported - PROMETHEUS_OWN == set()


def test_the_dashboard_asks_for_its_data_source_and_names_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
