"""``tavus-callbacks``: run it locally, simulate Tavus, look at what arrived, manage the store.

Configuration comes from the environment; what it leaves unsaid is taken from the ``dev``
running in this folder or above it (``cli/devstate.py``). Printing goes through
``cli/render.py``; failures of the store or of Redis become one line (``cli/failures.py``).
Another module's commands join with one line at the bottom: ``main.add_command(...)``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from cli import (
    config,
    deliveries,
    destinations,
    devstate,
    failures,
    keys,
    lifecycle,
    simulate,
    soak,
    transfer,
)
from cli.render import count, echo_table, fields, print_record, safe, table, when
from console import reads
from console.params import CONVERSATION_ARGS, CONVERSATION_STATUSES, BadArgs, parse
from schemas import extensions
from schemas.broker import redis_client, task_queue
from schemas.callbacks import KIND_TABLE, kinds
from schemas.classify import guess_kind
from schemas.messages import SEVERITIES, VERIFY_RECORDING
from schemas.settings import Settings, SettingsError
from workers import queries, replay
from workers.storage import state
from workers.store import audit
from workers.store.db import Store
from workers.store.models import EventStatus, Recording

EVENT_STATUSES = (EventStatus.RECEIVED, *sorted(EventStatus.FINAL))
# Commands that find their own way: dev writes the state the others read, simulate only posts.
SELF_CONFIGURED = {"dev"}
# Commands about the settings themselves: they read the environment, or not, themselves.
UNCONFIGURED = {"config"}


@click.group()
@click.version_option(package_name="tavus-callbacks", prog_name="tavus-callbacks")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Receive Tavus callbacks reliably. Configuration comes from the environment (README);
    what it leaves out comes from the `dev` running in this folder or above."""
    if ctx.invoked_subcommand in UNCONFIGURED:
        return
    if ctx.invoked_subcommand not in SELF_CONFIGURED:
        devstate.apply(os.environ, Path.cwd())  # before anything reads it (the Celery app)
    try:
        ctx.obj = Settings.from_env()
        extensions.load(ctx.obj.tavus_extensions)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def known_kind(value: str | None) -> str | None:
    """A kind built in or registered: checked once TAVUS_EXTENSIONS is loaded (by ``main``)."""
    if value is not None and value not in KIND_TABLE:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(kinds())}")
    return value


@contextmanager
def reading(settings: Settings) -> Iterator[Session]:
    """A session on the store, which must exist: a read never creates an empty one."""
    failures.check_store_exists(settings.database_url)
    with (
        failures.explained(settings.database_url),
        Store(settings.database_url, settings.cipher).session() as s,
    ):
        yield s


# --- running and feeding it ---------------------------------------------------------------


@main.command()
@click.option(
    "--port",
    type=int,
    default=lambda: click.get_current_context().find_object(Settings).port,
    help="Where web listens [default: PORT, else 5000].",
)
@click.option("--concurrency", type=int, default=2, show_default=True, help="Worker processes.")
def dev(port: int, concurrency: int) -> None:
    """Run web + worker locally (embedded Redis and SQLite unless configured)."""
    from cli import dev as local  # honcho is only needed here

    raise SystemExit(local.run(port, concurrency))


@main.command("simulate")
@click.option("--url", help="The callback URL, token included [default: the running dev's].")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(simulate.SCENARIOS),
    help="Repeatable; default: all of them.",
)
@click.option("--shuffle", is_flag=True, help="Post in random order, as late callbacks arrive.")
@click.option("--repeat", type=int, default=1, show_default=True, help="Post each body N times.")
@click.pass_obj
def simulate_command(
    settings: Settings, url: str | None, scenarios: tuple[str, ...], shuffle: bool, repeat: int
) -> None:
    """Post realistic Tavus callbacks to URL, like `stripe trigger`. With TAVUS_SIGNING_SECRETS
    set, the conversation ends with a post-call action, signed with the first secret."""
    url = url or _dev_callback_url()
    secret = next(iter(settings.tavus_signing_secrets), None)
    bodies = [
        body
        for name in scenarios or simulate.SCENARIOS
        for body in simulate.scenario(name, post_call=secret is not None)
    ]
    failures_seen = 0
    sent = simulate.post_all(url, bodies, shuffle=shuffle, repeat=repeat, signing_secret=secret)
    try:
        for body, status, reply in sent:
            kind = guess_kind(body)
            about = body.get(f"{kind}_id") or body.get("conversation_id", "-")
            label = body.get("event_type") or f"{kind} {about}"
            outcome = reply.get("status", reply.get("error", "-"))
            click.echo(f"{status} {outcome} {label} {body.get('status', '')}".rstrip())
            failures_seen += status >= 300
    except simulate.PostError as exc:
        raise click.ClickException(str(exc)) from exc
    conversations = sorted({b["conversation_id"] for b in bodies if b.get("conversation_id")})
    if conversations:
        click.echo("\nconversations (look at one with `tavus-callbacks conversation ID`):")
        for conversation_id in conversations:
            click.echo(f"  {conversation_id}")
    if failures_seen:
        raise click.ClickException(f"{failures_seen} callbacks were not accepted")


def _dev_callback_url() -> str:
    directory = devstate.nearest_data_dir(Path.cwd())
    running = devstate.read_state(directory) if directory else None
    if not running:
        raise click.UsageError(
            "give --url (the callback URL, token included), or start `tavus-callbacks dev` "
            "in this folder or above"
        )
    return str(running["callback_url"])


# --- looking at what arrived ----------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--kind",
    callback=lambda _ctx, _param, value: known_kind(value),
    help="Only events of this kind (conversation, guardrail, objective, replica, video, "
    "document, tool, or one that TAVUS_EXTENSIONS adds).",
)
@click.option("--status", type=click.Choice(EVENT_STATUSES), help="Only events in this status.")
@click.option("--conversation", "conversation_id", help="Only this conversation's events.")
@click.option("--type", "event_type", help="Only this event_type.")
@click.option("--warnings", is_flag=True, help="Only events taken with warnings.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def events(settings: Settings, as_json: bool, limit: int, **filters: str | None) -> None:
    """List recent events, newest first."""
    with reading(settings) as session:
        rows = queries.recent_events(session, limit=limit, **filters)
    print_record(rows, as_json, render_events)


EVENT_COLUMNS = ("received", "status", "kind", "type", "resource", "event id")


def render_events(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no events"
    return table(
        EVENT_COLUMNS,
        [
            (
                when(r["received_at"]),
                r["status"],
                r["kind"],
                r["event_type"],
                r["resource_id"],
                r["event_id"],
            )
            for r in rows
        ],
    )


OPTIONS = {"q": "--search", "limit": "--limit"}  # the API's parameter names, as the CLI's


@main.command()
@click.option("--search", "words", help='Only those whose transcript says this: words, "a phrase".')
@click.option("--status", type=click.Choice(CONVERSATION_STATUSES), help="Only in this status.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def conversations(
    settings: Settings, words: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List conversations, newest first; with --search, the best matches first, each with the
    line that matched."""
    try:
        args = parse(CONVERSATION_ARGS, {"q": words or "", "status": status or "", "limit": limit})
    except BadArgs as exc:
        said = (f"{OPTIONS.get(name, name)}: {' '.join(m)}" for name, m in exc.messages.items())
        raise click.ClickException("; ".join(said)) from exc
    with reading(settings) as session:
        rows = reads.conversations_page(session, args).data
    print_record(rows, as_json, render_conversations)


def render_conversations(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no conversations"
    if "match" not in rows[0]:
        return table(
            ("first seen", "status", "conversation", "replica", "ended"),
            [
                (when(r["first_seen_at"]), r["status"], r["conversation_id"], r["replica_id"],
                 when(r["ended_at"]))
                for r in rows
            ],
        )  # fmt: skip
    lines = []
    for r in rows:
        match = r["match"]
        lines.append(f"{safe(r['conversation_id'])}  {r['status']}  line {match['line']}")
        lines.append(f"  {safe(match['role'] or 'unknown')}: {_highlighted(match)}")
    return "\n".join(lines)


def _highlighted(match: dict[str, Any]) -> str:
    """The snippet, its matched words in bold (on a terminal; plain text elsewhere)."""
    snippet, at, parts = match["snippet"], 0, []
    for start, end in match["highlights"]:
        parts += [safe(snippet[at:start]), click.style(safe(snippet[start:end]), bold=True)]
        at = end
    return "".join([*parts, safe(snippet[at:])])


@main.command()
@click.argument("conversation_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_obj
def conversation(settings: Settings, conversation_id: str, as_json: bool) -> None:
    """Show what happened in one conversation: its state, its events in time order, its alerts."""
    with reading(settings) as session:
        record = queries.conversation_view(session, conversation_id)
    if record is None:
        raise click.ClickException(f"no events for conversation {safe(conversation_id)}")
    print_record(record, as_json, render_conversation)


def render_conversation(record: dict[str, Any]) -> str:
    ended = when(record.get("ended_at"))
    if record.get("shutdown_reason"):
        ended += f" ({safe(record['shutdown_reason'])})"
    recording = record["recording"] or {}
    head = fields(
        [
            ("replica", record.get("replica_id")),
            ("joined", when(record.get("joined_at"))),
            ("ended", ended),
            ("transcript", f"{count(len(record.get('transcript') or []), 'entry', 'entries')}"),
            ("perception", _perception(record)),
            ("recording", " ".join(p for p in (recording.get("uri"), _verification(record)) if p)),
        ]
    )
    parts = [f"conversation {safe(record['conversation_id'])}: {record['status']}", head]
    if record["objectives"]:
        rows = [
            (o["objective_name"], when(o["completed_at"]), o["output_variables"])
            for o in record["objectives"]
        ]
        parts.append(table(("objective", "completed", "variables"), rows))
    if record["guardrails"]:
        rows = [
            (g["guardrail"], g["count"], ", ".join(when(t) for t in g["triggered_at"]))
            for g in record["guardrails"]
        ]
        parts.append(table(("guardrail", "times", "triggered"), rows))
    rows = [
        (
            when(e["occurred_at"] or e["received_at"]),
            e["event_type"] or e["kind"],
            e["status"],
            e["event_id"],
        )
        for e in record["events"]
    ]
    parts.append(table(("time", "event", "status", "event id"), rows))
    if record.get("alerts"):
        parts.append(render_alerts(record["alerts"]))
    return "\n\n".join(parts)


def _verification(record: dict[str, Any]) -> str:
    found = (record["recording"] or {}).get("verification")
    if not found:
        return ""
    tries = count(found["attempts"], "attempt")
    if found["status"] == "verified":
        return f"(verified, {found['size']} bytes, {tries})"
    return f"({found['status']}: {safe(found['reason'] or 'waiting')}, {tries})"


def _perception(record: dict[str, Any]) -> str | None:
    if record.get("perception_analysis"):
        return f"{len(record['perception_analysis'])} characters of analysis"
    return record.get("perception_unavailable_reason")


# Columns a person has no use for: how the store orders statuses, when it last wrote a row.
HIDDEN_COLUMNS = {"status_rank"}


def _resource_command(kind: str) -> None:
    @main.command(kind, help=f"Show one {kind}'s latest status.")
    @click.argument("resource_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
    @click.pass_obj
    def show(settings: Settings, resource_id: str, as_json: bool) -> None:
        with reading(settings) as session:
            record = queries.resource_record(session, kind, resource_id)
        if record is None:
            raise click.ClickException(f"no {kind} {safe(resource_id)}")
        visible = {k: v for k, v in record.items() if k not in HIDDEN_COLUMNS}
        print_record(visible, as_json, render_resource)


def render_resource(record: dict[str, Any]) -> str:
    return fields(
        (key, when(value) if key.endswith("_at") and isinstance(value, str) else value)
        for key, value in record.items()
    )


for _kind in queries.resource_models():
    _resource_command(_kind)


@main.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, attempts included.")
@click.option("--conversation", "conversation_id", help="Only this conversation's alerts.")
@click.option("--severity", type=click.Choice(SEVERITIES))
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def alerts_command(settings: Settings, as_json: bool, limit: int, **filters: str | None) -> None:
    """List alerts, newest first, with each channel's delivery."""
    with reading(settings) as session:
        rows = queries.recent_alerts(session, limit=limit, **filters)
    print_record(rows, as_json, render_alerts)


def render_alerts(rows: list[dict[str, Any]]) -> str:
    """Each alert, then a table of its deliveries, one row per channel."""
    if not rows:
        return "no alerts"
    blocks = []
    for row in rows:
        lines = [
            f"{when(row['raised_at'])}  {row['severity'].upper()}  {safe(row['title'])}  "
            f"[{safe(row['cause_key'])}]"
        ]
        deadline = row["facts"].get("recovery_deadline")
        if deadline:
            lines.append(f"  recover before {when(deadline)[:16]} UTC")
        deliveries = [
            (d["channel"], d["status"], count(d["attempts"], "attempt"), d["last_error"])
            for d in row["deliveries"]
        ]
        if deliveries:
            delivered = table(("channel", "status", "tries", "last error"), deliveries)
            lines += [f"  {line}" for line in delivered.splitlines()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- acting on what arrived -----------------------------------------------------------------


@main.command("verify-recording")
@click.argument("conversation_id")
@click.pass_obj
def verify_recording(settings: Settings, conversation_id: str) -> None:
    """Check a conversation's recording in its bucket again, from scratch (after a fix)."""
    redis_url = failures.check_redis_url(settings.redis_url)
    failures.check_store_exists(settings.database_url)
    with failures.explained(settings.database_url, redis_url):
        with Store(settings.database_url, settings.cipher).session() as session:
            row = session.get(Recording, conversation_id, with_for_update=True)
            if row is None or not (row.uri or row.object_key):
                raise click.ClickException(
                    f"no recording location for conversation {safe(conversation_id)}"
                )
            round_ = state.start_round(row, row.ready_event_id)
        # After the commit, so that the worker sees the new round.
        task_queue(redis_client(settings), settings).send(
            VERIFY_RECORDING, [conversation_id, round_]
        )
    click.echo(f"verification of {conversation_id}'s recording queued (round {round_})")


@main.command("replay")
@click.argument("event_id", required=False)
@click.option("--failed", is_flag=True, help="Replay every failed (dead-lettered) event.")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many.")
@click.pass_obj
def replay_command(settings: Settings, event_id: str | None, failed: bool, limit: int) -> None:
    """Process stored events again: EVENT_ID, or --failed ones once their cause is fixed."""
    if (event_id is None) == (not failed):
        raise click.UsageError("give one EVENT_ID or --failed")
    redis_url = failures.check_redis_url(settings.redis_url)
    failures.check_store_exists(settings.database_url)
    with failures.explained(settings.database_url, redis_url):
        tasks = task_queue(redis_client(settings), settings)
        with Store(settings.database_url, settings.cipher).session() as session:
            if failed:
                rows = replay.failed_events(session, limit)
            else:
                row = replay.one_event(session, event_id)
                if row is None:
                    raise click.ClickException(f"no event {safe(event_id)}")
                rows = [row]
            done = replay.replay(rows, tasks.publish_event)
        target = "failed events" if failed else f"event:{event_id}"
        outcome = "done" if done else "nothing"
        store = Store(settings.database_url, settings.cipher)
        audit.record(store, lifecycle.cli_actor(), "replay", target, outcome, events=len(done))
    if not done:
        click.echo("no failed events to replay")
        return
    click.echo(f"replayed {count(len(done), 'event')}:")
    rows = [
        (i.event_id, i.event_type, i.conversation_id, i.was, i.attempts, i.last_error) for i in done
    ]
    echo_table(("event id", "type", "conversation", "was", "attempts", "last error"), rows)


# --- the store and the spool ----------------------------------------------------------------


@main.group()
def db() -> None:
    """The event store's schema."""


@db.command()
@click.pass_obj
def upgrade(settings: Settings) -> None:
    """Migrate the store to the newest schema (the Procfile's release step)."""
    with failures.explained(settings.database_url):
        Store(settings.database_url, settings.cipher).upgrade()
    click.echo("store schema is up to date")


@main.group()
def spool() -> None:
    """The local spool that keeps events while Redis cannot take them (SPOOL_DIR)."""


@spool.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def spool_status(settings: Settings, as_json: bool) -> None:
    """How many events wait in the spool, and for how long the oldest has."""
    from receiver.spool import Spool  # the receiver's module; nothing of the web app is started

    local = Spool(settings.spool_dir)
    record = {
        "directory": str(local.directory.resolve()),
        "events": local.size(),
        "oldest_age_seconds": local.oldest_age_seconds(),
    }
    print_record(record, as_json, _render_spool)


def _render_spool(record: dict[str, Any]) -> str:
    age = record["oldest_age_seconds"]
    oldest = f", oldest {age:.0f} s" if age is not None else ""
    return f"{count(record['events'], 'event')} spooled in {record['directory']}{oldest}"


@spool.command("drain")
@click.option(
    "--wait",
    type=float,
    default=0.0,
    show_default=True,
    help="Keep retrying this many seconds while Redis is down or another drainer is busy.",
)
@click.pass_obj
def spool_drain(settings: Settings, wait: float) -> None:
    """Publish spooled events to the queue, oldest first; resends are published once."""
    from receiver.publisher import Publisher
    from receiver.spool import Spool

    failures.check_redis_url(settings.redis_url)
    publisher = Publisher(
        redis_client(settings),
        settings.dedup_ttl_seconds,
        settings.redis_min_replicas,
        settings.redis_replica_timeout_ms,
    )
    local = Spool(settings.spool_dir)
    deadline = time.monotonic() + wait
    totals = {"published": 0, "duplicates": 0, "rejected": 0}
    while True:
        report = local.drain(publisher.publish)
        for key in totals:
            totals[key] += getattr(report, key)
        if report.complete or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    click.echo(
        f"{totals['published']} published, {totals['duplicates']} duplicates, "
        f"{totals['rejected']} rejected, {report.remaining} remaining"
    )
    if not report.complete:
        raise click.ClickException(report.error or "another process is draining the spool")


# --- the benchmark, from a checkout -----------------------------------------------------------


def _bench_command() -> click.Command:
    """``bench`` lives in bench/, which a checkout has and the wheel does not."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "bench" / "cli.py").is_file() and str(checkout) not in sys.path:
        sys.path.append(str(checkout))  # an editable install: bench/ sits next to cli/
    try:
        from bench.cli import bench
    except ImportError:

        @click.command(
            "bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
        )
        def bench() -> None:
            """Measure the pipeline (from a checkout only)."""
            raise click.ClickException(
                "the benchmark runs from a checkout of tavus-callbacks: "
                "git clone it, pip install -e .[bench], then tavus-callbacks bench"
            )

    return bench


main.add_command(_bench_command())
# Other modules' commands join here, one line each: main.add_command(module.command)
deliveries.register(main)  # deliveries, redeliver: forwarding to webhooks and hooks
destinations.register(main)  # destinations [pause|resume NAME]: each destination's state
config.register(main)  # config docs, config check: the settings themselves
lifecycle.register(main)  # purge, erase: retention and erasure
keys.register(main)  # keys generate|list, rotate-keys: encryption at rest
transfer.register(main)  # export, import: the events of one deployment into another
soak.register(main)  # soak: the Procfile's processes under load and chaos, checked


if __name__ == "__main__":
    main()
