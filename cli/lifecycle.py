"""``tavus-callbacks purge`` and ``erase``: retention by hand, and erasure of one conversation,
replica, video or document wherever this service holds it (``workers/lifecycle.py``)."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime

import click

from cli import failures
from cli.render import echo_table, print_record, safe, table, when
from schemas.broker import redis_client
from schemas.settings import Settings
from workers import lifecycle
from workers.store import audit
from workers.store.db import Store


def cli_actor() -> str:
    """Who acts from a shell: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


@click.command("purge")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    help="Days instead of RETENTION_DAYS; 0 purges everything finished.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; remove nothing.")
@click.pass_obj
def purge(settings: Settings, days: float | None, dry_run: bool) -> None:
    """Remove what the retention lets go: conversations (and the rest) whose newest event is
    older than that, with nothing pending."""
    if days is None:
        if not settings.retention_days:
            raise click.ClickException("RETENTION_DAYS=0 keeps everything; give --older-than DAYS")
        days = settings.retention_days
    failures.check_store_exists(settings.database_url)
    with failures.explained(settings.database_url):
        store, audit_days = (
            Store(settings.database_url, settings.cipher),
            settings.audit_retention_days,
        )
        removed = lifecycle.purge(store, days, dry_run, cli_actor(), audit_days)
    verb = "would remove" if dry_run else "removed"
    if not removed:
        click.echo(f"nothing older than {days:g} days to purge")
        return
    click.echo(f"{verb} {sum(removed.values())} rows older than {days:g} days:")
    echo_table(("table", "rows"), sorted(removed.items()))


@click.command("erase")
@click.argument("kind", type=click.Choice(lifecycle.TARGET_KINDS))
@click.argument("target_id")
@click.option("--json", "as_json", is_flag=True, help="Print what was erased as JSON.")
@click.pass_obj
def erase(settings: Settings, kind: str, target_id: str, as_json: bool) -> None:
    """Erase one conversation, replica, video or document: its rows, its queued messages, its
    spooled files. A tombstone stays: later callbacks for it are acked and dropped."""
    redis_url = failures.check_redis_url(settings.redis_url)
    failures.check_store_exists(settings.database_url)
    target = lifecycle.Target(kind, target_id)
    with failures.explained(settings.database_url, redis_url):
        done = lifecycle.erase(
            Store(settings.database_url, settings.cipher),
            target,
            cli_actor(),
            redis_client(settings, timeout=30.0),
            settings.spool_dir,
        )
    print_record(done.as_json(), as_json, _render_erased)


def _render_erased(record: dict) -> str:
    return (
        f"erased {record['kind']} {safe(record['id'])}: {record['rows']} rows, "
        f"{record['queued_messages']} queued messages, {record['spooled_files']} spooled files"
    )


@click.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only entries from then on (UTC).",
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.pass_obj
def audit_command(settings: Settings, as_json: bool, since: datetime | None, limit: int) -> None:
    """Who replayed, redelivered, erased, purged or signed in, newest first."""
    failures.check_store_exists(settings.database_url)
    since = since.replace(tzinfo=UTC) if since else None
    store = Store(settings.database_url, settings.cipher)
    with failures.explained(settings.database_url), store.session() as session:
        rows = audit.entries(session, since, limit)
    print_record(rows, as_json, _render_audit)


def _render_audit(rows: list[dict]) -> str:
    if not rows:
        return "nothing in the audit trail"
    return table(
        ("when", "actor", "action", "target", "outcome", "detail"),
        [
            (when(r["at"]), r["actor"], r["action"], r["target"] or "-", r["outcome"],
             ", ".join(f"{k}={v}" for k, v in r["detail"].items()))
            for r in rows
        ],
    )  # fmt: skip


def register(main: click.Group) -> None:
    main.add_command(purge)
    main.add_command(erase)
    main.add_command(audit_command)
