"""``tavus-callbacks export`` and ``import``: the events of one deployment, as JSON Lines, into
another (the embedded SQLite to PostgreSQL, or a backup back into a store).

Import sends each event through the intake's own door: the body is classified and keyed as a
callback is (``schemas.classify``), and queued with the receiver's ``Publisher`` (one claim and
one push); the workers of the deployment it goes to store it under its key and run its handler,
so the records (conversation, transcript, perception, objectives...) are rebuilt by the same
code. An event whose key that store holds already changes nothing: importing twice doubles
nothing. What "status" means on the way: docs/privacy.md#export-and-import.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import click
import orjson
import redis
from sqlalchemy import select

from cli import failures
from cli.lifecycle import cli_actor
from receiver.errors import NotJSONObject
from receiver.intake import parse_object
from receiver.publisher import Publisher, dedup_key
from schemas.broker import redis_client
from schemas.callbacks import KIND_TABLE, kinds
from schemas.classify import UnknownKind, classify
from schemas.messages import EventMessage, event_message
from schemas.settings import Settings
from workers import transfer
from workers.store import audit
from workers.store.db import Store
from workers.store.models import Event, EventStatus

SOURCE = "import"
CHUNK_LINES = 500  # lines checked against the store in one query
DATES = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
# The claim an import holds in Redis is its own ("import:<key>"): a Redis shared with the
# deployment the events came from still holds the intake's claims on them, and those must not
# pass for an import done already. The store's unique key is what makes a repeat a repeat.
CLAIM_PREFIX = "import:"
MAX_SHOWN_ERRORS = 20  # bad lines described one by one; past that, counted


# --- export ----------------------------------------------------------------------------------


@click.command("export")
@click.option("--since", type=click.DateTime(formats=DATES), help="Received from then on (UTC).")
@click.option("--until", type=click.DateTime(formats=DATES), help="Received before then (UTC).")
@click.option("--kind", help="Only events of this kind (conversation, replica, video...).")
@click.option("--conversation", "conversation_id", help="Only this conversation's events.")
@click.pass_obj
def export_command(
    settings: Settings,
    since: datetime | None,
    until: datetime | None,
    kind: str | None,
    conversation_id: str | None,
) -> None:
    """Write the stored events to stdout as JSON Lines, oldest first: id, kind, event_type,
    source, received_at, status and the body as Tavus sent it. `import` reads them."""
    if kind is not None and kind not in KIND_TABLE:  # TAVUS_EXTENSIONS are loaded by now
        known = ", ".join(kinds())
        raise click.BadParameter(f"{kind!r} is not one of {known}", param_hint="--kind")
    selection = transfer.Selection(_utc(since), _utc(until), kind, conversation_id)
    failures.check_store_exists(settings.database_url)
    store = Store(settings.database_url)
    written, outcome = 0, "done"
    out = click.get_binary_stream("stdout")
    with failures.explained(settings.database_url):
        total = transfer.count(store, selection)
        try:
            with _progress(total, "exporting") as bar:
                for event in transfer.events(store, selection):
                    out.write(transfer.line(event))
                    written += 1
                    bar.update(1)
            out.flush()
        except BrokenPipeError:  # `export | head`: the reader has what it wanted
            outcome = "stopped"
            sys.stderr.close()  # nothing more to say, and Python's own flush must not fail
        finally:
            audit.record(
                store, cli_actor(), "export", None, outcome, events=written,
                **selection.as_detail(),
            )  # fmt: skip
    if outcome == "stopped":
        raise SystemExit(1)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, _steps: int) -> None:
        return None


def _progress(total: int, label: str) -> Any:
    """A progress bar on stderr when it is a terminal (stdout carries the data); else none."""
    if not sys.stderr.isatty():
        return _NoBar()
    return click.progressbar(length=total, label=label, file=sys.stderr)


# --- import ----------------------------------------------------------------------------------


class BadLine(ValueError):
    """A line that is no exported event; its message says what is wrong, without content."""


@dataclass
class ImportReport:
    queued: int = 0  # sent through the intake: the workers store and process them
    present: int = 0  # the store holds their key already
    duplicates: int = 0  # an earlier import holds their claim: queued already
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)

    def as_detail(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "present": self.present,
            "duplicates": self.duplicates,
            "bad_lines": len(self.bad),
        }


def import_message(line: bytes) -> EventMessage:
    """The PROCESS_EVENT message for one exported line, as the intake would make it for the
    same body: its kind as the hint (``?kind=``), keyed by the classifier. It keeps its id and
    when it was received (retention counts from then); marked ``settled`` when it was final
    where it came from."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON ({exc})") from exc
    if not isinstance(item, dict):
        raise BadLine(f"a line must be a JSON object, not {type(item).__name__}")
    event_id = _field(item, "id", str)
    try:
        event_id = str(uuid.UUID(event_id))
    except ValueError as exc:
        raise BadLine("id is not an event id (a UUID)") from exc
    raw = _field(item, "body", str).encode("utf-8")
    try:
        body = parse_object(raw)  # as the intake reads a body
    except NotJSONObject as exc:
        raise BadLine(str(exc)) from exc
    try:
        received = datetime.fromisoformat(_field(item, "received_at", str))
    except ValueError as exc:
        raise BadLine("received_at is not an ISO 8601 time") from exc
    if received.tzinfo is None:
        received = received.replace(tzinfo=UTC)
    kind = item.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise BadLine("kind must be a string or null")
    try:
        verdict = classify(body, raw, hint=kind)
    except UnknownKind as exc:
        raise BadLine(f"kind {kind!r} is unknown here (TAVUS_EXTENSIONS?): {exc}") from exc
    message = event_message(verdict, raw, received.timestamp(), SOURCE, event_id=event_id)
    message.pop("claim_ttl", None)  # a repeat window is the intake's; the key is this event's
    message["claim_key"] = CLAIM_PREFIX + message["event_key"]
    if item.get("status") in EventStatus.FINAL:
        message["settled"] = True
    return message


def _field(item: dict[str, Any], name: str, kind: type) -> Any:
    value = item.get(name)
    if not isinstance(value, kind):
        raise BadLine(f"{name} is missing or not a {kind.__name__}")
    return value


def numbered_chunks(lines: Iterable[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    """The non-blank lines with their numbers (from 1), ``size`` at a time."""
    chunk: list[tuple[int, bytes]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            chunk.append((number, line))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def import_lines(
    lines: Iterable[bytes],
    store: Store,
    client: redis.Redis,
    publisher: Publisher,
    report: ImportReport,
) -> ImportReport:
    """Send every good line through the intake; note the bad ones in ``report`` and go on."""
    for chunk in numbered_chunks(lines, CHUNK_LINES):
        messages: list[EventMessage] = []
        for number, line in chunk:
            try:
                messages.append(import_message(line))
            except BadLine as exc:
                report.bad.append((number, str(exc)))
        keys = [m["event_key"] for m in messages]
        with store.session() as session:
            stored = set(session.scalars(select(Event.event_key).where(Event.event_key.in_(keys))))
        new = [m for m in messages if m["event_key"] not in stored]
        report.present += len(messages) - len(new)
        for message, claimed in zip(new, _claimed(client, new), strict=True):
            # A claim held: an earlier import queued it, and it is on its way. (The publish
            # would change nothing either, but could not tell: the claim holds this same id.)
            if claimed or publisher.publish(message) is not None:
                report.duplicates += 1
            else:
                report.queued += 1
    return report


def _claimed(client: redis.Redis, messages: list[EventMessage]) -> list[bool]:
    """Whether each message's claim is held, in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for message in messages:
            pipe.exists(dedup_key(message["claim_key"]))
        return [bool(found) for found in pipe.execute()]


@click.command("import")
@click.argument("file", type=click.File("rb"))
@click.pass_obj
def import_command(settings: Settings, file: IO[bytes]) -> None:
    """Put the events of an `export` file (FILE, or - for stdin) into this deployment, through
    the intake's door: deduplicated by their key, source `import`, processed by the workers.
    Importing twice doubles nothing."""
    redis_url = failures.check_redis_url(settings.redis_url)
    failures.check_store_exists(settings.database_url)
    store = Store(settings.database_url)
    client = redis_client(settings, timeout=30.0)
    publisher = Publisher(
        client,
        settings.dedup_ttl_seconds,
        settings.redis_min_replicas,
        settings.redis_replica_timeout_ms,
    )
    name = "stdin" if file.name == "<stdin>" else f"file:{file.name}"
    report = ImportReport()
    with failures.explained(settings.database_url, redis_url):
        try:
            import_lines(file, store, client, publisher, report)
        except redis.RedisError as exc:
            audit.record(store, cli_actor(), "import", name, "failed", **report.as_detail())
            reason = failures.explain(exc, settings.database_url, redis_url) or str(exc)
            raise click.ClickException(
                f"{reason}; {report.queued} events were queued before it: run the same import "
                "again once it is back (what is in already is not doubled)"
            ) from exc
        outcome = "partial" if report.bad else "done"
        audit.record(store, cli_actor(), "import", name, outcome, **report.as_detail())
    for number, reason in report.bad[:MAX_SHOWN_ERRORS]:
        click.echo(f"line {number}: {reason}; skipped", err=True)
    if len(report.bad) > MAX_SHOWN_ERRORS:
        click.echo(f"... and {len(report.bad) - MAX_SHOWN_ERRORS} more bad lines", err=True)
    click.echo(
        f"{report.queued} queued for the workers, {report.present} already stored, "
        f"{report.duplicates} queued by an earlier import, {len(report.bad)} bad lines"
    )
    if report.bad:
        raise click.ClickException(f"{len(report.bad)} lines were not imported (see above)")


def register(main: click.Group) -> None:
    main.add_command(export_command)
    main.add_command(import_command)
