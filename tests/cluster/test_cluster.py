"""Many hosts on one machine (tests/cluster/rig.py): every callback the balancer acked is
processed once and forwarded once, whatever host goes away.

The normal suite runs one fault, a worker host vanishing under load (about a minute).
``scripts/cluster-test`` runs everything, scale-out and every fault (the Redis primary's loss
among them), and prints the tables that docs/benchmarks.md shows.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.cluster.hosts import available
from tests.cluster.load import Audit
from tests.cluster.rig import Sizing, cluster
from tests.cluster.runs import (
    DRAIN_HEADERS,
    FAULT_HEADERS,
    FAULTS,
    INTAKE_HEADERS,
    faults,
    scale_out,
    table,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=f"cluster rig: {available()}"),
    pytest.mark.timeout(1800),
]

FULL = os.environ.get("CLUSTER_FULL") == "1"  # scripts/cluster-test


def assert_exactly_once(result: Audit, repeated_posts_allowed: int = 0) -> None:
    assert result.acked > 0, result.summary()
    assert result.lost == 0, result.summary()
    assert result.stored_twice == 0 and result.ledger_twice == 0, result.summary()
    assert not any(result.stuck.values()), result.summary()
    # A worker killed between the destination's answer and the ledger's commit sends that one
    # event again, with the same webhook-id (docs/forwarding: at-least-once to the destination,
    # deduplicated by the id); at most one per pool process of the killed host.
    assert result.received_again <= repeated_posts_allowed, result.summary()


def show(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\n" + text, file=sys.stderr)


def test_a_worker_host_vanishes_under_load_and_every_acked_event_is_done_once(capsys) -> None:
    sizing = Sizing()
    with cluster(sizing, report=sys.stderr) as rig:
        rows, result = faults(rig, ["a worker host vanishes"], rate=20)
    show(table(rows, FAULT_HEADERS) + "\n\n" + result.summary(), capsys)
    (row,) = rows
    assert not row.what_happened.startswith("0 message")  # the dead host held some
    assert row.not_2xx == 0, row
    assert_exactly_once(result, repeated_posts_allowed=sizing.worker_concurrency)


@pytest.mark.skipif(not FULL, reason="the whole multi-host run: scripts/cluster-test")
def test_full_run_scale_out_and_every_fault(capsys) -> None:
    sizing = Sizing()
    with cluster(sizing, report=sys.stderr) as rig:
        seconds = float(os.environ.get("CLUSTER_SECONDS", 4))
        intake, drain, audits = scale_out(rig, seconds)
        show(table(intake, INTAKE_HEADERS) + "\n\n" + table(drain, DRAIN_HEADERS), capsys)
        show("\n".join("scale-out: " + a.summary() for a in audits), capsys)
        rows, result = faults(rig, list(FAULTS), rate=float(os.environ.get("CLUSTER_RATE", 10)))
        show(table(rows, FAULT_HEADERS) + "\n\nfaults: " + result.summary(), capsys)
    for scaled in audits:
        assert_exactly_once(scaled)
    assert_exactly_once(result, repeated_posts_allowed=sizing.worker_concurrency)
