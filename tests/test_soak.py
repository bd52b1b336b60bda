"""The soak in the suite: three minutes of load and chaos (``tavus-callbacks soak``), every
fault of its schedule once, ending with nothing lost, duplicated, stuck or growing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.services import ROOT, base_env

pytestmark = pytest.mark.integration


def test_three_minute_soak_with_chaos_loses_nothing() -> None:
    command = [sys.executable, "-m", "cli.main", "soak", "--minutes", "3", "--rate", "3",
               "--seed", "22", "--quiet-timeout", "45"]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=330
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    for fault in ("kill worker", "kill web worker", "redis SIGKILL", "redis SIGTERM",
                  "destination 429", "spool disk full"):  # fmt: skip
        assert fault in done.stdout, done.stdout
    assert "ok: seed 22" in done.stdout


def test_a_repeat_passes_only_where_a_lost_attempt_explains_it() -> None:
    from cli.soak import lost_attempts, repeats

    deliveries = [
        {"event_id": "a", "type": "webhook", "history": [{"outcome": "lost"},
                                                          {"outcome": "delivered"}]},
        {"event_id": "b", "type": "webhook", "history": [{"outcome": "delivered"}]},
        {"event_id": "a", "type": "hook", "history": [{"outcome": "delivered"}]},
    ]  # fmt: skip
    lost = lost_attempts(deliveries, "webhook")
    assert repeats({"a": 2, "b": 1}, lost) == (1, 0)  # killed after the sink answered
    assert repeats({"a": 3, "b": 2}, lost) == (3, 2)  # a's third and b's second: unexplained
    assert repeats({"a": 2}, lost_attempts(deliveries, "hook")) == (1, 1)
