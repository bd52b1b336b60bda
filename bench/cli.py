"""``tavus-callbacks bench``: options here, the work in ``run`` and ``report`` (imported late,
so the rest of the CLI never pays for them)."""

from __future__ import annotations

import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

WORK_ROOT = Path(".tavus-callbacks")
STORE_CHOICES = ("sqlite", "postgres")


@click.command("bench")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Each load measure.")
@click.option("--events", type=int, default=2000, show_default=True, help="Messages per drain.")
@click.option(
    "--e2e-seconds", type=float, default=15.0, show_default=True, help="The end-to-end run."
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Choice(STORE_CHOICES),
    help="Repeatable; default both (PostgreSQL skipped, with a warning, if absent).",
)
@click.option(
    "--postgres-url",
    envvar="TEST_POSTGRES_URL",
    default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
    show_default=True,
    help="A server where scratch databases may be created and dropped.",
)
@click.option(
    "--network-delay-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Put Redis and PostgreSQL behind a proxy adding this delay each way (0: off).",
)
@click.option(
    "--web-concurrency",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="WEB_CONCURRENCY for every web server run (0: the deploy config's default).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    multiple=True,
    help="Repeatable: worker processes (celery --concurrency) to measure [default: 1 and 2]; "
    "the largest also runs end to end.",
)
@click.option(
    "--worker-instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Celery workers started for each measure, each with --processes (as `heroku ps:scale "
    "worker=N`): over a network one worker's consumer caps the rate, whatever its pool size.",
)
@click.option(
    "--tracing",
    is_flag=True,
    help="Also measure the intake and the real worker with OpenTelemetry tracing on (every "
    "span sampled, exported over OTLP/HTTP to a local sink), beside the same without.",
)
@click.option(
    "--smoke",
    is_flag=True,
    help="Tiny sizes, a few seconds: checks, not figures (nothing written, no verdicts).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The Markdown file to update [default: BENCHMARKS.md, except with --smoke].",
)
@click.option("--write", is_flag=True, help="With --smoke: update BENCHMARKS.md all the same.")
@click.option("--note", default="", help="A remark to keep with the run (e.g. a shared machine).")
@click.option("--keep", is_flag=True, help="Keep the run's logs and scratch files.")
def bench(
    stores: tuple[str, ...],
    smoke: bool,
    output: Path | None,
    write: bool,
    note: str,
    keep: bool,
    postgres_url: str,
    **sizes: Any,
) -> None:
    """Measure intake vs a bare-Flask baseline, end to end, and workers vs a no-op task, on
    this machine; print the tables and write them to BENCHMARKS.md."""
    try:
        from . import load, report, run
        from .stores import postgres_reachable
    except ImportError as exc:  # psutil: the `bench` extra
        raise click.ClickException(
            f"the benchmark needs the bench extra ({exc.name} is missing): pip install -e .[bench]"
        ) from exc

    try:
        load.wrk_binary()
    except load.LoadError as exc:
        raise click.ClickException(str(exc)) from exc
    processes = tuple(sorted(set(sizes.pop("processes")))) or run.Sizes.processes
    chosen = run.Sizes(**sizes, processes=processes)
    if smoke:  # tiny sizes; where and how many processes run still as asked
        where = {
            key: sizes[key]
            for key in ("network_delay_ms", "web_concurrency", "worker_instances", "tracing")
        }
        chosen = run.Sizes(**{**run.SMOKE.__dict__, **where})
    wanted = stores or chosen.stores
    why = postgres_reachable(postgres_url) if "postgres" in wanted else None
    if why and stores:
        raise click.ClickException(f"PostgreSQL is not reachable: {why}")
    if why:
        click.echo(f"warning: PostgreSQL skipped, not reachable: {why}", err=True)
        wanted = tuple(store for store in wanted if store != "postgres")
    chosen = run.Sizes(**{**chosen.__dict__, "stores": wanted})
    work_dir = (WORK_ROOT / f"bench-{time.strftime('%Y%m%d-%H%M%S')}").resolve()

    def say(line: str) -> None:  # progress on stderr, the tables on stdout
        click.echo(line, err=True)

    say(f"benchmark in {work_dir}, about {run.estimate(chosen):.0f} s")
    # A SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the servers it started stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        results = run.measure(chosen, postgres_url, work_dir, say, keep=keep)
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc} (logs in {work_dir})") from exc
    click.echo(report.render(results))
    if not smoke:  # a smoke run's figures mean nothing: no verdict on them
        click.echo("\n".join(report.verdicts(results)))
    if output is None and (write or not smoke):
        output = Path("BENCHMARKS.md")
    if output is None:
        say(f"smoke run, nothing written; took {results.elapsed:.0f} s")
        return
    command = shlex.join(["tavus-callbacks", *sys.argv[1:]])
    generated = report.document(results, command, note, judged=not smoke)
    report.write(output, generated, *report.markers(results))
    say(f"written to {output}; took {results.elapsed:.0f} s")
