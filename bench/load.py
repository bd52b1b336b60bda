"""Load from ``wrk`` with ``post.lua``: as fast as the server answers, or at a constant rate."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import orjson

SCRIPT = Path(__file__).with_name("post.lua")
# Enough connections to keep every sync worker busy while wrk reconnects (they close each one).
SATURATION_CONNECTIONS = 16
# Constant rate: one connection per wrk thread (post.lua times each request by its thread), and
# no more connections than the server has sync workers. wrk reconnects as soon as an answer
# closes a connection and only then waits for the next due time; a sync worker that accepts such
# an idle connection waits on it, while a request that is due waits for a worker. With one
# connection per worker, no due request ever queues behind an idle one (a router, or Tavus,
# connects when it has something to send).
DEFAULT_RATE_CONNECTIONS = 4


class LoadError(RuntimeError):
    """wrk is missing, failed, or the server did not answer as it should."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    errors: dict[str, int]
    latencies_ms: list[float] = field(repr=False)  # constant-rate runs only, sorted

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """A percentile of the latencies, in ms."""
        return percentile(self.latencies_ms, p)

    @classmethod
    def combine(cls, parts: list[LoadResult]) -> LoadResult:
        """One result from several slices of the same measure."""
        statuses: dict[int, int] = {}
        errors: dict[str, int] = {}
        for part in parts:
            for status, count in part.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
            for kind, count in part.errors.items():
                errors[kind] = errors.get(kind, 0) + count
        return cls(
            requests=sum(part.requests for part in parts),
            seconds=sum(part.seconds for part in parts),
            statuses=statuses,
            errors=errors,
            latencies_ms=sorted(value for part in parts for value in part.latencies_ms),
        )

    def check(self, expected_status: int) -> None:
        """Every answer must be ``expected_status``: a faster error is no result."""
        others = {s: n for s, n in self.statuses.items() if s != expected_status}
        failed = {k: v for k, v in self.errors.items() if v and k != "timeout"}
        if others or failed or self.errors.get("timeout"):
            raise LoadError(f"unexpected answers {others}, errors {self.errors}")
        if not self.requests:
            raise LoadError("no request was answered")


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of sorted values."""
    if not ordered:
        raise LoadError("no latencies were recorded")
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise LoadError("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
    return found


def run(
    url: str,
    bodies: Path,
    out: Path,
    seconds: float,
    rate: float = 0,
    prefix: str = "bench",
    rate_connections: int = DEFAULT_RATE_CONNECTIONS,
) -> LoadResult:
    """POST the bodies to ``url`` for ``seconds``; at ``rate`` req/s if given, else flat out."""
    connections = rate_connections if rate else SATURATION_CONNECTIONS
    # Constant rate: a thread per connection. Flat out: two threads, as many cores as we have.
    threads = connections if rate else min(2, connections)
    env = {
        **os.environ,
        "BENCH_BODIES": str(bodies),
        "BENCH_OUT": str(out),
        "BENCH_RATE": str(rate),
        "BENCH_THREADS": str(threads),
        "BENCH_PREFIX": prefix,
    }
    command = [
        wrk_binary(), "--threads", str(threads), "--connections", str(connections),
        "--duration", f"{max(1, round(seconds))}s", "--timeout", "10s",
        "--script", str(SCRIPT), url,
    ]  # fmt: skip
    out.unlink(missing_ok=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    report = orjson.loads(out.read_bytes())
    return LoadResult(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        statuses=_sum_pairs(report["statuses"]),
        errors=report["errors"],
        latencies_ms=sorted(report["latency_ms"]),
    )


def _sum_pairs(pairs: list[list[int]]) -> dict[int, int]:
    totals: dict[int, int] = {}
    for status, count in pairs:
        totals[status] = totals.get(status, 0) + count
    return totals
