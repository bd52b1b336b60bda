"""The run as tables, the machine it ran on, and BENCHMARKS.md kept up to date.

``BENCHMARKS.md`` keeps what people wrote around the generated part: a run replaces only the
lines between the two markers.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil

from . import load
from .load import LoadResult
from .run import SATURATION, Results
from .services import redis_server_binary

BEGIN = "<!-- bench:begin (written by `tavus-callbacks bench`; edit outside the markers) -->"
END = "<!-- bench:end -->"
# A run with --network-delay-ms keeps a place of its own: it answers another question (how
# many processes over a network), and must not replace the loopback run.
NETWORK_BEGIN = (
    "<!-- bench:network:begin (written by `tavus-callbacks bench --network-delay-ms`; "
    "edit outside the markers) -->"
)
NETWORK_END = "<!-- bench:network:end -->"
MIB = 1024 * 1024

TARGETS = {
    "intake_ratio": 0.8,  # intake / baseline throughput at saturation, at least
    "p99_ms_at_1000": 5.0,  # intake ack p99 at 1,000 req/s, at most
    "e2e_p50_ms": 50.0,  # end-to-end p50 at 200 events/s, at most
    "e2e_p99_ms": 250.0,  # end-to-end p99 at 200 events/s, at most
    "worker_ratio": 0.7,  # events / no-op tasks per second, at least
    "encrypted_ratio": 0.9,  # intake with ENCRYPTION_KEYS / without, throughput, at least
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ms(value: float) -> str:
    return f"{value:.2f}"


INTAKE_HEADER = [
    "measure", "intake", "baseline", "intake / baseline", "receiver without metrics or console",
    "intake / that",
]  # fmt: skip


def intake_rows(results: Results) -> list[list[str]]:
    """Per measure: the intake, the baseline, and the receiver alone without its instruments."""
    rows = []
    for mode, intake in results.intake.items():
        apps = (intake, results.baseline[mode], results.unmetered[mode])
        if mode == SATURATION:
            measures = [("throughput at saturation (req/s)", [a.throughput for a in apps])]
        else:
            rate = f"{int(mode):,}"
            measures = [
                (f"ack p{p} at {rate} req/s (ms)", [app.percentile(p) for app in apps])
                for p in (50, 99)
            ]
        digits = 0 if mode == SATURATION else 2
        for label, (ours, baseline, unmetered) in measures:
            rows.append([
                label, f"{ours:.{digits}f}", f"{baseline:.{digits}f}", f"{ours / baseline:.2f}",
                f"{unmetered:.{digits}f}", f"{ours / unmetered:.2f}",
            ])  # fmt: skip
    return rows


ENCRYPTED_HEADER = ["measure", "intake", "intake with ENCRYPTION_KEYS", "encrypted / plain"]
REPLICATED_HEADER = [
    "measure", "intake", "with a replica, REDIS_MIN_REPLICAS=1", "replicated / intake"
]  # fmt: skip


def variant_rows(results: Results, variant: dict[str, LoadResult]) -> list[list[str]]:
    """Per measure: the intake, the same intake run another way (``variant``, in the same turns)
    and their ratio."""
    rows = []
    for mode, intake in results.intake.items():
        other = variant.get(mode)
        if other is None:
            continue
        if mode == SATURATION:
            measures = [("throughput at saturation (req/s)", intake.throughput, other.throughput)]
        else:
            rate = f"{int(mode):,}"
            measures = [
                (f"ack p{p} at {rate} req/s (ms)", intake.percentile(p), other.percentile(p))
                for p in (50, 99)
            ]
        digits = 0 if mode == SATURATION else 2
        for label, plain, changed in measures:
            rows.append([
                label, f"{plain:.{digits}f}", f"{changed:.{digits}f}", f"{changed / plain:.2f}"
            ])  # fmt: skip
    return rows


def _encrypted_table(results: Results) -> list[str]:
    if not results.encrypted:
        return []
    return [
        "**Encryption at rest**: the same intake with `ENCRYPTION_KEYS` set (each body sealed "
        "with Fernet before Redis or the spool), in the same turns:",
        "",
        *_table(ENCRYPTED_HEADER, variant_rows(results, results.encrypted)),
        "",
    ]


def _replicated_table(results: Results) -> list[str]:
    if not results.replicated:
        return []
    spooled = results.replicated_spooled
    return [
        "**Replicated acknowledgement**: the same intake, in the same turns, with a replica "
        "following the Redis primary and `REDIS_MIN_REPLICAS=1` (each publish followed by "
        "`WAIT 1 100` in the same round trip, docs/redis-failover.md); "
        f"{spooled:,} of its requests were spooled for want of the replica's confirmation:",
        "",
        *_table(REPLICATED_HEADER, variant_rows(results, results.replicated)),
        "",
    ]


def mix_rows(results: Results) -> list[list[str]]:
    """Per load: intake / baseline at saturation and the ack p99 at the top rate, side by side."""
    loads = {"conversation": (results.body_bytes, results.intake, results.baseline)}
    for mix, bodies in results.mix_body_bytes.items():
        intake = {mode: pair[0] for (name, mode), pair in results.mixes.items() if name == mix}
        baseline = {mode: pair[1] for (name, mode), pair in results.mixes.items() if name == mix}
        loads[mix] = (bodies, intake, baseline)
    rows = []
    for mix, (bodies, intake, baseline) in loads.items():
        top = next((mode for mode in reversed(intake) if mode != SATURATION), None)
        ours, theirs = intake[SATURATION].throughput, baseline[SATURATION].throughput
        p99 = [_ms(load_.percentile(99)) for load_ in (intake[top], baseline[top])] if top else []
        rows.append([
            mix, f"{min(bodies):,}-{max(bodies):,}", f"{sum(bodies) // len(bodies):,}",
            f"{ours:.0f}", f"{theirs:.0f}", f"{ours / theirs:.2f}",
            *(p99 or ["-", "-"]), f"{int(top):,}" if top else "-",
        ])  # fmt: skip
    return rows


def e2e_rows(results: Results) -> list[list[str]]:
    return [
        [
            store,
            f"{results.sizes.e2e_rate}",
            str(len(latencies)),
            _ms(1000 * load.percentile(latencies, 50)),
            _ms(1000 * load.percentile(latencies, 99)),
        ]
        for store, latencies in results.e2e_seconds.items()
    ]


def worker_rows(results: Results) -> list[list[str]]:
    rows = []
    for (store, processes), events in results.events_per_second.items():
        noop = results.noop_per_second[store, processes]
        label = results.sizes.workers_label(processes).removeprefix("x")
        rows.append([store, label, f"{events:.0f}", f"{noop:.0f}", f"{events / noop:.2f}"])
    return rows


def memory_rows(results: Results) -> list[list[str]]:
    return [[role, f"{peak / MIB:.0f}"] for role, peak in sorted(results.peak_rss.items())]


def render(results: Results) -> str:
    """The run's figures as Markdown tables, one per question."""
    sizes = results.sizes
    bodies = results.body_bytes
    lines = [
        *_network_lines(results),
        f"Payloads: whole conversations, {len(bodies)} callbacks each "
        f"(transcript {max(bodies):,} bytes, mean body {sum(bodies) // len(bodies):,} bytes); "
        f"a new idempotency key per request; every answer checked to be 202.",
        "",
        f"**Intake** (`POST /callbacks/<token>`) against the **baseline** (bare Flask, one "
        f"Redis LPUSH, 202), same gunicorn config, {sizes.seconds:g} s per measure in "
        f"{sizes.slices} turns each, {results.web_workers} sync web workers "
        f"(`WEB_CONCURRENCY`). The intake is the Procfile's web (`deploy.wsgi:app`: "
        f"receiver, `/metrics` and console); beside it, in the same turns, the receiver alone "
        f"without its Prometheus instruments (`bench/unmetered.py`), so the last column is what "
        f"the metrics and the console cost the intake:",
        "",
        *_table(INTAKE_HEADER, intake_rows(results)),
        "",
        *_encrypted_table(results),
        *_replicated_table(results),
        *_mix_table(results),
        "**End to end**, from when the POST was due to the event processed in the store "
        f"({sizes.e2e_seconds:g} s at a constant rate, {max(sizes.processes)} worker processes"
        f"{f' in each of {sizes.worker_instances} workers' * (sizes.worker_instances > 1)}):",
        "",
        *_table(["store", "events/s", "events", "p50 (ms)", "p99 (ms)"], e2e_rows(results)),
        "",
        f"**Workers**, {sizes.events:,} queued messages drained, against a no-op task on the "
        "same messages:",
        "",
        *_table(
            ["store", "worker processes", "events/s", "no-op tasks/s", "events / no-op"],
            worker_rows(results),
        ),
        "",
        *_tracing_table(results),
        "**Peak RSS** of one process:",
        "",
        *_table(["process", "MiB"], memory_rows(results)),
    ]
    return "\n".join(lines) + "\n"


def tracing_rows(results: Results) -> list[list[str]]:
    """Tracing off, then on: the intake's measures, and each worker's events per second."""
    rows = []
    for mode, traced in results.traced.items():
        off = results.intake[mode]
        if mode == SATURATION:
            rows.append(
                [
                    "intake throughput at saturation (req/s)",
                    f"{off.throughput:.0f}",
                    f"{traced.throughput:.0f}",
                    f"{traced.throughput / off.throughput:.2f}",
                ]
            )
            continue  # fmt: skip
        for p in (50, 99):
            before, after = off.percentile(p), traced.percentile(p)
            label = f"intake ack p{p} at {int(mode):,} req/s (ms)"
            rows.append([label, _ms(before), _ms(after), f"{after / before:.2f}"])
    for (store, processes), traced_rate in results.traced_per_second.items():
        off_rate = results.events_per_second[store, processes]
        label = f"worker events/s, {store}, {results.sizes.workers_label(processes)}"
        ratio = traced_rate / off_rate
        rows.append([label, f"{off_rate:.0f}", f"{traced_rate:.0f}", f"{ratio:.2f}"])
    return rows


def _tracing_table(results: Results) -> list[str]:
    if not results.traced:
        return []
    return [
        "**Tracing** (`--tracing`): the same intake and real worker with OpenTelemetry on "
        "(`OTEL_EXPORTER_OTLP_ENDPOINT` set, `parentbased_always_on`: every span sampled, "
        "exported over OTLP/HTTP to `bench/otlp_sink.py`), in the same turns as without; "
        f"{results.spans_exported:,} spans exported in all:",
        "",
        *_table(["measure", "tracing off", "tracing on", "on / off"], tracing_rows(results)),
        "",
    ]


def _network_lines(results: Results) -> list[str]:
    delay = results.sizes.network_delay_ms
    trips = ", ".join(f"{name} {ms:.2f} ms" for name, ms in results.round_trip_ms.items())
    if not delay:
        return [f"Round trips (median, loopback): {trips}.", ""] if trips else []
    used = results.proxy_cpu_seconds.items()
    cpu = ", ".join(f"{scheme.split('+')[0]} {seconds:.0f} s" for scheme, seconds in used)
    return [
        f"**Network**: every process reaches Redis and PostgreSQL through `bench/netdelay.py`, a "
        f"proxy adding {delay:g} ms each way; measured round trips (median, the proxy's own "
        f"thread hand-offs included): {trips}. The proxy runs on the same cores and used CPU a "
        f"real network would not take: {cpu} of the run's {results.elapsed:.0f} s.",
        "",
    ]


def _mix_table(results: Results) -> list[str]:
    if not results.mix_body_bytes:
        return []
    header = [
        "load", "body bytes", "mean body", "intake req/s", "baseline req/s",
        "intake / baseline", "intake ack p99 (ms)", "baseline ack p99 (ms)", "at req/s",
    ]  # fmt: skip
    delay = results.sizes.network_delay_ms
    where = f", Redis {delay:g} ms away each way" if delay else ""
    return [
        f"**Intake by load** (saturation, then the top fixed rate{where}):",
        "",
        *_table(header, mix_rows(results)),
        "",
    ]


def verdicts(results: Results) -> list[str]:
    """Each target (issues 5 and 12), met or not, with the figure."""
    out = []
    saturation = results.intake.get(SATURATION), results.baseline.get(SATURATION)
    if all(saturation):
        ratio = saturation[0].throughput / saturation[1].throughput
        out.append(_verdict("intake / baseline throughput", ratio, TARGETS["intake_ratio"], ">="))
    encrypted = results.encrypted.get(SATURATION)
    if saturation[0] and encrypted:
        ratio = encrypted.throughput / saturation[0].throughput
        label = "intake with ENCRYPTION_KEYS / without, throughput"
        out.append(_verdict(label, ratio, TARGETS["encrypted_ratio"], ">="))
    if "1000" in results.intake:
        p99 = results.intake["1000"].percentile(99)
        out.append(_verdict("intake p99 at 1,000 req/s (ms)", p99, TARGETS["p99_ms_at_1000"], "<="))
    for (mix, mode), (intake, baseline) in results.mixes.items():
        if mode == SATURATION:
            ratio = intake.throughput / baseline.throughput
            out.append(_verdict(f"intake / baseline, {mix}", ratio, TARGETS["intake_ratio"], ">="))
        elif mode == "1000":
            p99 = intake.percentile(99)
            label = f"intake p99 at 1,000 req/s, {mix} (ms)"
            out.append(_verdict(label, p99, TARGETS["p99_ms_at_1000"], "<="))
    for store, latencies in results.e2e_seconds.items():
        p50 = 1000 * load.percentile(latencies, 50)
        out.append(_verdict(f"end-to-end p50, {store} (ms)", p50, TARGETS["e2e_p50_ms"], "<="))
        p99 = 1000 * load.percentile(latencies, 99)
        out.append(_verdict(f"end-to-end p99, {store} (ms)", p99, TARGETS["e2e_p99_ms"], "<="))
    for key, events in results.events_per_second.items():
        ratio = events / results.noop_per_second[key]
        label = f"workers / no-op, {key[0]} {results.sizes.workers_label(key[1])}"
        out.append(_verdict(label, ratio, TARGETS["worker_ratio"], ">="))
    return out


def _verdict(label: str, value: float, target: float, sense: str) -> str:
    met = value >= target if sense == ">=" else value <= target
    return f"- {'met' if met else 'MISSED'}: {label} {value:.2f} (target {sense} {target:g})"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found[1] if found else cpu
    memory = psutil.virtual_memory().total / 1024**3
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; {platform.platform()}; "
        f"Python {platform.python_version()}; {_version([redis_server_binary(), '--version'])}; "
        f"{_version([load.wrk_binary(), '-v'])}"
    )


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"{command[0]}: {exc}"
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0][:80] if first else command[0]


def document(results: Results, command: str, note: str = "", judged: bool = True) -> str:
    """The generated part of BENCHMARKS.md: when, where, how, the tables and (``judged``: a full
    run, whose figures mean something) the verdicts."""
    when = datetime.fromtimestamp(results.started_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    delay = results.sizes.network_delay_ms
    begin, end = markers(results)
    lines = [
        begin,
        f"## Latest run over a network ({delay:g} ms each way)" if delay else "## Latest run",
        "",
        f"- date: {when}, took {results.elapsed:.0f} s",
        f"- command: `{command}`",
        f"- machine: {machine()}",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", render(results)]
    if judged:
        lines += ["Targets (issues 5 and 12):", "", *verdicts(results), ""]
    lines.append(end)
    return "\n".join(lines) + "\n"


def markers(results: Results) -> tuple[str, str]:
    """Where in BENCHMARKS.md this run goes: loopback and network runs each have a place."""
    return (NETWORK_BEGIN, NETWORK_END) if results.sizes.network_delay_ms else (BEGIN, END)


def write(path: Path, generated: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``generated`` between the markers ``begin`` and ``end`` of ``path``, keeping
    everything else (at the end, the first time)."""
    if not path.exists():
        path.write_text("# Benchmarks\n\n" + generated)
        return
    text = path.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        path.write_text(head + generated + ("\n" + tail if tail else ""))
    else:
        path.write_text(text.rstrip("\n") + "\n\n" + generated)
