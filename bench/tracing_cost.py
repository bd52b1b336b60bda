"""``python -m bench.tracing_cost``: what tracing costs the intake per callback, in CPU time.

``tavus-callbacks bench --tracing`` measures throughput and latency, wall-clock figures that
move with whatever else the machine runs. This measures what the receiver itself spends per
callback: its process's CPU time (every thread: the span exporter's too, flushed before the
clock stops), posting whole conversations through the app in-process (Flask's test client)
against a private Redis, with tracing off and on (every span sampled, exported over OTLP/HTTP
to ``bench/otlp_sink.py``), each in a fresh process, in alternate rounds (ABBA).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from . import payloads, services

TOKEN = "bench-tracing-cost-token"


def child(count: int) -> None:
    """In the measured process: ``count`` callbacks after a warm-up; prints CPU us each."""
    from receiver import create_app
    from schemas import tracing
    from schemas.settings import Settings

    client = create_app(Settings.from_env()).test_client()
    templates = payloads.templates()
    bodies = [
        payloads.render(templates[n % len(templates)], f"cost-{n // len(templates)}", 0)
        for n in range(count + 200)
    ]

    def post(body: bytes) -> None:
        answer = client.post(f"/callbacks/{TOKEN}", data=body, content_type="application/json")
        assert answer.status_code == 202, answer.json

    for body in bodies[:200]:
        post(body)
    tracing.flush()
    started = time.process_time()
    for body in bodies[200:]:
        post(body)
    tracing.flush()
    print(1e6 * (time.process_time() - started) / count)


def measure(count: int, rounds: int) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="tracing-cost-"))
    redis_process, redis_url = services.redis_server(work, work / "redis.log")
    port = services.free_port()
    sink = services.Process(
        "otlp-sink", [sys.executable, "-m", "bench.otlp_sink", str(port)],
        services.python_env(), work / "otlp.log",
    ).start()  # fmt: skip
    sink.wait_ready(lambda: services.listening(port))
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    modes = {
        "off": {},
        "on": {**endpoint, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        # On, but this callback not sampled (what a ratio sampler does to most of them).
        "sampled out": {**endpoint, "OTEL_TRACES_SAMPLER": "always_off"},
    }
    found: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for turn in range(rounds):
            for mode in modes if turn % 2 == 0 else reversed(list(modes)):
                env = services.python_env(
                    REDIS_URL=redis_url,
                    CALLBACK_TOKENS=TOKEN,
                    SPOOL_DIR=str(work / "spool"),
                    SPOOL_DRAIN_INTERVAL_SECONDS="0",
                    LOG_LEVEL="warning",
                    **modes[mode],
                )
                command = [sys.executable, "-m", "bench.tracing_cost", "--child", str(count)]
                done = subprocess.run(
                    command, env=env, cwd=services.ROOT, capture_output=True, text=True,
                    timeout=600, check=True,
                )  # fmt: skip
                found[mode].append(float(done.stdout.split()[-1]))
                redis.Redis.from_url(redis_url).flushall()
    finally:
        sink.stop()
        redis_process.stop()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="callbacks per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child)
        return
    found = measure(options.count, options.rounds)
    off = statistics.median(found["off"])
    print(f"intake CPU per callback (median of {options.rounds} rounds of {options.count}):")
    for mode, values in found.items():
        median = statistics.median(values)
        rounds = " ".join(f"{value:.0f}" for value in values)
        change = f"+{median - off:.0f} us, x{median / off:.2f}"
        print(f"  {mode:12} {median:5.0f} us, {change}  ({rounds})")


if __name__ == "__main__":
    main()
