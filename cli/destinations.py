"""``tavus-callbacks destinations`` (each destination's state), ``destinations pause NAME`` and
``destinations resume NAME``: pausing by hand, recorded in the audit trail. Destinations are
named, never shown by URL: a URL may hold a credential."""

from __future__ import annotations

import json
from typing import Any

import click
import redis

from cli import failures
from cli.lifecycle import cli_actor
from cli.render import table
from schemas.broker import redis_client, task_queue
from schemas.messages import RAISE_ALERT
from schemas.settings import Settings
from workers import forwarding
from workers.store import audit
from workers.store.db import Store


@click.group("destinations", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def destinations(context: click.Context, as_json: bool) -> None:
    """Each destination: its type, state, last success, failures in a row, pending deliveries."""
    if context.invoked_subcommand is not None:
        return
    settings: Settings = context.obj
    with Store(settings.database_url, settings.cipher).session() as session:
        rows = forwarding.destinations_table(session, settings)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(render(rows))


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no destinations (FORWARD_<NAME>_URL)"
    headers = ("name", "type", "state", "last success", "failures in a row", "pending", "why")
    return table(
        headers,
        (
            (
                r["name"],
                r["type"] or "-",
                r["state"] + ("" if r["configured"] else " (not configured)"),
                r["last_success_at"] or "never",
                r["consecutive_failures"],
                r["pending"],
                r["pause_reason"] or "",
            )
            for r in rows
        ),
    )


@destinations.command("pause")
@click.argument("name")
@click.pass_obj
def pause(settings: Settings, name: str) -> None:
    """Pause NAME: its deliveries wait until `destinations resume NAME` (no probe)."""
    done = _audited(settings, "pause", name, forwarding.pause_destination, cli_actor())
    click.echo(f"{name}: paused" if done else f"{name}: already paused")


@destinations.command("resume")
@click.argument("name")
@click.pass_obj
def resume(settings: Settings, name: str) -> None:
    """Resume NAME at once: its waiting deliveries go at their next look."""
    done, alert = _audited(settings, "resume", name, forwarding.resume_destination)
    if alert is not None:  # its failures had paused it: say it resumed, as a probe would
        try:
            failures.check_redis_url(settings.redis_url)
            task_queue(redis_client(settings), settings).send(RAISE_ALERT, [alert])
        except (click.ClickException, redis.RedisError) as exc:
            why = exc.message if isinstance(exc, click.ClickException) else type(exc).__name__
            click.echo(f"resumed, but its alert was not queued: {why}", err=True)
    click.echo(f"{name}: resumed" if done else f"{name}: was not paused")


def _audited(settings: Settings, action: str, name: str, act: Any, *args: Any) -> Any:
    """``act(session, settings, name, *args)``, in the audit trail whatever its outcome."""
    store = Store(settings.database_url, settings.cipher)
    try:
        with store.session() as session:
            result = act(session, settings, name, *args)
    except forwarding.NoSuchDestination:
        audit.record(store, cli_actor(), action, f"destination:{name}", "refused")
        raise click.ClickException(f"no destination {name!r} (FORWARD_<NAME>_URL)") from None
    done = result[0] if isinstance(result, tuple) else result
    audit.record(store, cli_actor(), action, f"destination:{name}", "done" if done else "nothing")
    return result


def register(main: click.Group) -> None:
    main.add_command(destinations)
