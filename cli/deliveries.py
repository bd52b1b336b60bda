"""``tavus-callbacks deliveries`` and ``redeliver``: what went to the user's destinations (of
every type, hooks too), every attempt, and sending again. Destinations are named, never shown by
URL: a URL may hold a credential."""

from __future__ import annotations

import json
from typing import Any

import click
import redis

from cli import failures
from cli.lifecycle import cli_actor
from schemas.broker import redis_client, task_queue
from schemas.settings import Settings
from workers import forwarding, queries
from workers.store import audit
from workers.store.db import Store


@click.command("deliveries")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, every attempt included.")
@click.option(
    "--destination", help="Only this destination (<NAME> of FORWARD_<NAME>_URL, or hook:...)."
)
@click.option("--failed", is_flag=True, help="Only the deliveries that failed.")
@click.option("--event", "event_id", help="Only this event's deliveries.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.pass_obj
def deliveries(
    settings: Settings,
    as_json: bool,
    destination: str | None,
    failed: bool,
    event_id: str | None,
    limit: int,
) -> None:
    """List deliveries to destinations, newest first."""
    with Store(settings.database_url, settings.cipher).session() as session:
        rows = queries.list_deliveries(session, destination, failed, event_id, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(_render(rows))


def _render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no deliveries"
    lines = []
    for row in rows:
        last = row["history"][-1] if row["history"] else {}
        code = last.get("status_code")
        why = f"  {row['last_error']}" if row["last_error"] else ""
        lines.append(
            f"{row['event_id']}  {row['destination']:<20} {row['status']:<9} "
            f"{row['attempts']:>3} tries  {code or '-':>3}  "
            f"{row['event_type'] or row['kind'] or '-'}  ({row['source']}){why}"
        )
    return "\n".join(lines)


@click.command("redeliver")
@click.argument("event_id", required=False)
@click.option("--destination", help="Only this destination.")
@click.option("--failed", is_flag=True, help="Every failed delivery.")
@click.pass_obj
def redeliver(
    settings: Settings, event_id: str | None, destination: str | None, failed: bool
) -> None:
    """Send again: EVENT_ID's deliveries (even delivered ones), or every --failed one."""
    if (event_id is None) == (not failed):
        raise click.UsageError("give one EVENT_ID or --failed")
    failures.check_redis_url(settings.redis_url)
    send = task_queue(redis_client(settings), settings).send
    try:
        with Store(settings.database_url, settings.cipher).session() as session:
            tasks = forwarding.redeliver(session, settings, event_id, destination, failed)
            for task in tasks:
                send(task["name"], task["args"])
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis unreachable, nothing redelivered: {exc}") from exc
    target = "failed deliveries" if failed else f"event:{event_id}"
    outcome = "done" if tasks else "nothing"
    store = Store(settings.database_url, settings.cipher)
    audit.record(store, cli_actor(), "redeliver", target, outcome, deliveries=len(tasks))
    if not tasks:
        click.echo("nothing to redeliver")
        return
    click.echo(f"redelivering {len(tasks)} deliver{'y' if len(tasks) == 1 else 'ies'}:")
    for task in tasks:
        click.echo(f"  {task['args'][0]}  {task['args'][1]}")


def register(main: click.Group) -> None:
    main.add_command(deliveries)
    main.add_command(redeliver)
