"""`tavus-callbacks bench --smoke`: the whole benchmark at a tiny size, as a user runs it.

The figures are not checked (machines are noisy, and this one is shared with the rest of the
suite): only that every table is there, with the rows it should have, and positive numbers; and
that a smoke run leaves the repository alone unless told where to write.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from tests.services import ROOT, base_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (scripts/test does)"),
]


def tables(markdown: str) -> dict[tuple[str, ...], list[list[str]]]:
    """Each Markdown table by its header: its body rows, cells stripped."""
    found: dict[tuple[str, ...], list[list[str]]] = {}
    rows: list[list[str]] | None = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            rows = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if rows is None:
            rows = found.setdefault(tuple(cells), [])
        elif set(cells) != {"---"}:
            rows.append(cells)
    return found


def positive_numbers(row: list[str]) -> bool:
    """Every cell after the label that is a number is above zero, and there is one."""
    values = []
    for cell in row[1:]:
        try:
            values.append(float(cell.replace(",", "")))
        except ValueError:
            continue
    return bool(values) and all(value > 0 for value in values)


def smoke(cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli.main", "bench", "--smoke", "--store", "sqlite", *options]
    done = subprocess.run(
        command, cwd=cwd, env=base_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def git_status() -> str:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def test_smoke_run_prints_every_table_and_leaves_the_repository_alone() -> None:
    benchmarks = (ROOT / "BENCHMARKS.md").read_bytes()
    before = git_status()
    done = smoke(ROOT)
    assert (ROOT / "BENCHMARKS.md").read_bytes() == benchmarks
    assert git_status() == before
    assert "nothing written" in done.stderr
    assert "MISSED" not in done.stdout and "met:" not in done.stdout

    found = tables(done.stdout)
    intake = found[
        "measure", "intake", "baseline", "intake / baseline",
        "receiver without metrics or console", "intake / that",
    ]  # fmt: skip
    assert [row[0] for row in intake] == [
        "throughput at saturation (req/s)",
        "ack p50 at 200 req/s (ms)",
        "ack p99 at 200 req/s (ms)",
    ]
    encrypted = found["measure", "intake", "intake with ENCRYPTION_KEYS", "encrypted / plain"]
    assert [row[0] for row in encrypted] == [row[0] for row in intake]
    # The same intake with a replica confirming each publish (REDIS_MIN_REPLICAS=1).
    replicated = found[
        "measure", "intake", "with a replica, REDIS_MIN_REPLICAS=1", "replicated / intake"
    ]  # fmt: skip
    assert [row[0] for row in replicated] == [row[0] for row in intake]
    assert re.search(r"\d+ of its requests were spooled", done.stdout)
    end_to_end = found["store", "events/s", "events", "p50 (ms)", "p99 (ms)"]
    assert [row[:2] for row in end_to_end] == [["sqlite", "200"]]
    workers = found["store", "worker processes", "events/s", "no-op tasks/s", "events / no-op"]
    assert [row[:2] for row in workers] == [["sqlite", "1"]]
    memory = found["process", "MiB"]
    assert {row[0] for row in memory} == {
        "web worker (intake)",
        "web worker (baseline)",
        "web worker (unmetered)",
        "web worker (encrypted)",
        "web worker (replicated)",
        "Celery worker process",
        "Celery worker process (no-op)",
    }
    for row in [*intake, *encrypted, *replicated, *end_to_end, *workers, *memory]:
        assert positive_numbers(row), row


def test_smoke_run_writes_where_output_says(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n\nNotes kept across runs.\n")
    smoke(tmp_path, "--output", str(output), "--note", "smoke test", "--tracing")
    written = output.read_text()
    # --tracing: the intake and the worker again with tracing on, which exported spans.
    traced = tables(written)["measure", "tracing off", "tracing on", "on / off"]
    assert [row[0] for row in traced] == [
        "intake throughput at saturation (req/s)",
        "intake ack p50 at 200 req/s (ms)",
        "intake ack p99 at 200 req/s (ms)",
        "worker events/s, sqlite, x1",
    ]
    assert all(positive_numbers(row) for row in traced), traced
    spans = re.search(r"([\d,]+) spans exported in all", written)
    assert spans and int(spans[1].replace(",", "")) > 0
    assert "Celery worker process (tracing on)" in written
    assert written.startswith("# Benchmarks\n\nNotes kept across runs.\n")
    assert "- command: `tavus-callbacks bench --smoke" in written
    assert "- machine: " in written and "- note: smoke test" in written
    assert "| throughput at saturation (req/s) |" in written
    assert "MISSED" not in written and "Targets" not in written
    assert not list((tmp_path / ".tavus-callbacks").glob("bench-*")), "scratch files left behind"


def test_smoke_run_over_a_network_keeps_a_section_of_its_own(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    # The loopback run and the notes around it, without the network run if one is there.
    loopback = (ROOT / "BENCHMARKS.md").read_text().partition(report.NETWORK_BEGIN)[0]
    output.write_text(loopback)
    done = smoke(
        tmp_path, "--output", str(output), "--network-delay-ms", "2", "--web-concurrency", "3",
        "--worker-instances", "2",
    )  # fmt: skip
    written = output.read_text()
    assert written.startswith(loopback), "the loopback run or its notes were touched"
    network = written[len(loopback) :]
    assert "## Latest run over a network (2 ms each way)" in network
    assert "3 sync web workers (`WEB_CONCURRENCY`)" in network
    # What the processes waited on: at least the two delays, and said with the proxy's CPU.
    trip = re.search(r"measured round trips \(median[^)]*\): Redis ([\d.]+) ms", done.stdout)
    assert trip and float(trip[1]) >= 4.0, done.stdout[:2000]
    assert re.search(r"used CPU a real network would not take: redis \d+ s", network)
    # Two Celery workers of one process each drained the queue and ran end to end.
    workers = tables(network)[
        "store", "worker processes", "events/s", "no-op tasks/s", "events / no-op"
    ]  # fmt: skip
    assert [row[:2] for row in workers] == [["sqlite", "2 workers x1"]]
    assert "1 worker processes in each of 2 workers" in network


def test_each_kind_of_run_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nnotes\n")
    for begin, end, text in [
        (report.BEGIN, report.END, "loopback 1"),
        (report.NETWORK_BEGIN, report.NETWORK_END, "network 1"),
        (report.BEGIN, report.END, "loopback 2"),
        (report.NETWORK_BEGIN, report.NETWORK_END, "network 2"),
    ]:
        report.write(path, f"{begin}\n{text}\n{end}\n", begin, end)
    written = path.read_text()
    assert written.startswith("# Benchmarks\n\nnotes\n")
    assert "loopback 2" in written and "network 2" in written
    assert "loopback 1" not in written and "network 1" not in written
    assert written.index("loopback 2") < written.index("network 2")  # each stays where it was
