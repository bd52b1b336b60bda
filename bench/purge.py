"""``python -m bench.purge``: does a purge of a large store move the intake's latency?

The intake (gunicorn with the deploy config, ``deploy.wsgi:app``) takes a steady rate from
``wrk`` (``post.lua``, wrk2-style: a late request counts from when it was due), and a real
Celery worker processes what it queues. Slices take turns: in one, the load alone; in the next,
the same load while that worker runs the purge (``tavus.events.purge``, as ``beat`` sends it)
over thousands of expired conversations seeded just before. It prints the intake's p50 / p99
for each, how long each purge ran and what it removed; docs/benchmarks.md keeps the figures.

The seeding helpers are shared with tests/test_lifecycle.py: a finished old conversation is
its conversation row, four events with realistic bodies, an objective, a delivered forward
delivery and its attempt (eight rows); ``seed_pending`` adds old conversations whose work is
not done, which no purge may touch.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
import redis
from sqlalchemy import insert, select

from schemas.broker import TaskQueue
from schemas.messages import EVENTS_QUEUE, PURGE
from workers.store.db import Store
from workers.store.models import (
    AuditEntry,
    Conversation,
    DeliveryStatus,
    Event,
    EventStatus,
    ForwardAttempt,
    ForwardDelivery,
    Objective,
)

from . import load, payloads, pipeline, services
from .load import LoadResult
from .stores import DEFAULT_POSTGRES_URL, STORES, scratch_store

ROWS_PER_CONVERSATION = 8
_EVENT_TYPES = (
    "system.replica_joined",
    "system.shutdown",
    "application.transcription_ready",
    "application.perception_analysis",
)
_CHUNK = 500  # conversations per INSERT batch
_TRANSCRIPT = [
    {"role": "user" if n % 2 else "assistant", "content": f"line {n} of what was said " * 4}
    for n in range(20)
]


# --- seeding ---------------------------------------------------------------------------------


def seed_finished(store: Store, conversations: int, days_ago: float, prefix: str = "old") -> int:
    """``conversations`` finished conversations last touched ``days_ago``: every row the purge
    removes, written in bulk. The rows written."""
    at = datetime.now(UTC) - timedelta(days=days_ago)
    for first in range(0, conversations, _CHUNK):
        ids = [
            f"{prefix}-{uuid.uuid4().hex[:16]}" for _ in range(min(_CHUNK, conversations - first))
        ]
        events = [
            _event(conversation_id, n, at, EventStatus.PROCESSED)
            for conversation_id in ids
            for n in range(4)
        ]
        with store.begin() as connection:
            connection.execute(insert(Conversation), [_conversation(c, at) for c in ids])
            connection.execute(insert(Event), events)
            connection.execute(
                insert(Objective),
                [{"conversation_id": c, "objective_name": "get_name",
                  "output_variables": {"name": "x"}, "completed_at": at} for c in ids],
            )  # fmt: skip
            firsts = [e["id"] for e in events[::4]]
            connection.execute(
                insert(ForwardDelivery),
                [{"event_id": e, "destination": "sink", "source": "callback", "type": "webhook",
                  "status": DeliveryStatus.DELIVERED, "attempts": 1, "delivered_at": at}
                 for e in firsts],
            )  # fmt: skip
            deliveries = connection.execute(
                select(ForwardDelivery.id).where(ForwardDelivery.event_id.in_(firsts))
            ).scalars()
            connection.execute(
                insert(ForwardAttempt),
                [{"delivery_id": d, "started_at": at, "finished_at": at, "outcome": "delivered",
                  "status_code": 200, "answer": "ok"} for d in deliveries],
            )  # fmt: skip
    return conversations * ROWS_PER_CONVERSATION


def seed_pending(store: Store, days_ago: float) -> dict[str, str]:
    """Old conversations whose work is not done, by what is pending: an event never processed,
    an event waiting for its retry, a forward delivery retrying. Their conversation ids."""
    at = datetime.now(UTC) - timedelta(days=days_ago)
    pending = {name: f"pending-{name}-{uuid.uuid4().hex[:8]}" for name in
               ("unprocessed", "retrying_event", "retrying_delivery")}  # fmt: skip
    with store.begin() as connection:
        connection.execute(insert(Conversation), [_conversation(c, at) for c in pending.values()])
        for name, conversation_id in pending.items():
            events = [_event(conversation_id, n, at, EventStatus.PROCESSED) for n in range(4)]
            if name == "unprocessed":
                events[0].update(status=EventStatus.RECEIVED, attempts=0, processed_at=None)
            if name == "retrying_event":
                events[0].update(status=EventStatus.RECEIVED, attempts=2, last_error="Timeout")
            connection.execute(insert(Event), events)
            if name == "retrying_delivery":
                connection.execute(
                    insert(ForwardDelivery).values(
                        event_id=events[0]["id"], destination="sink", source="callback",
                        type="webhook", status=DeliveryStatus.PENDING, attempts=3,
                        first_attempt_at=at, last_error="503 from the destination",
                    )
                )  # fmt: skip
    return pending


def _conversation(conversation_id: str, at: datetime) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "replica_id": "r79e1c033f",
        "joined_at": at,
        "ended_at": at,
        "transcript": _TRANSCRIPT,
        "transcript_at": at,
        "perception_analysis": "The user appeared calm.",
        "first_seen_at": at,
        "updated_at": at,
    }


def _event(conversation_id: str, n: int, at: datetime, status: str) -> dict[str, Any]:
    event_type = _EVENT_TYPES[n]
    body = {"conversation_id": conversation_id, "event_type": event_type,
            "properties": {"transcript": _TRANSCRIPT} if n == 2 else {}}  # fmt: skip
    return {
        "id": str(uuid.uuid4()),
        "event_key": f"conversation:{conversation_id}:{event_type}",
        "kind": "conversation",
        "event_type": event_type,
        "conversation_id": conversation_id,
        "source": "callback",
        "received_at": at,
        "occurred_at": at,
        "body": orjson.dumps(body).decode(),
        "status": status,
        "attempts": 1,
        "last_error": None,
        "processed_at": at,
    }


# --- the measure -----------------------------------------------------------------------------


@dataclass
class PurgeRun:
    seconds: float  # from the task's send to its audit entry
    rows: int


@dataclass
class Figures:
    store: str
    rate: int
    quiet: list[LoadResult] = field(default_factory=list)
    purging: list[LoadResult] = field(default_factory=list)
    purges: list[PurgeRun] = field(default_factory=list)
    rows_before: int = 0
    pinned: bool = False  # web and wrk on one core, the worker on the other


def measure(
    kind: str,
    work_dir: Path,
    postgres_url: str,
    rate: int,
    seconds: float,
    slices: int,
    conversations: int,
    say: Any,
    pin: bool = False,
) -> Figures:
    figures = Figures(kind, rate, pinned=pin)
    work_dir = work_dir / kind  # logs of its own: a server is ready when its log says so
    work_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    bodies = work_dir / "bodies.txt"
    payloads.write_templates(bodies)
    with ExitStack() as stack:
        server, redis_url = services.redis_server(work_dir, work_dir / "redis.log")
        stack.callback(server.stop)
        database_url = stack.enter_context(scratch_store(kind, work_dir, postgres_url))
        store = Store(database_url)
        stack.callback(store.dispose)
        env = services.python_env(
            REDIS_URL=redis_url, DATABASE_URL=database_url, CALLBACK_TOKENS=token,
            SPOOL_DIR=str(work_dir / "spool"), RETENTION_DAYS="90",
        )  # fmt: skip
        web, port = services.gunicorn("intake", "deploy.wsgi:app", env, work_dir / "web.log")
        stack.callback(web.stop)
        command = services.worker_command(EVENTS_QUEUE, 2, f"purge-{kind}")
        worker = services.Process("worker", command, env, work_dir / "worker.log").start()
        stack.callback(worker.stop)
        worker.wait_ready(lambda: worker.log_says("ready."))
        client = redis.Redis.from_url(redis_url)
        stack.callback(client.close)
        url = f"http://127.0.0.1:{port}/callbacks/{token}"
        connections = len(web.children())
        if pin:  # as on separate dynos: the web and the load on core 0, the worker on core 1
            _pin(web.tree(), {0})
            _pin(worker.tree(), {1})
            os.sched_setaffinity(0, {0})  # wrk, started from here, inherits it
            stack.callback(os.sched_setaffinity, 0, set(range(os.cpu_count() or 1)))
        load.run(url, bodies, work_dir / "warmup.json", 2, rate, "warmup", connections)
        for turn in range(2 * slices):
            purging = turn % 2 == 1
            if purging:
                figures.rows_before = seed_finished(store, conversations, days_ago=100)
            pipeline.settle(client, (EVENTS_QUEUE,))
            runs: list[PurgeRun] = []
            trigger = threading.Thread(target=_purge, args=(client, store, runs))
            if purging:
                trigger.start()
            result = load.run(
                url, bodies, work_dir / "wrk.json", seconds, rate, f"s{turn}", connections
            )
            trigger.join(timeout=600) if purging else None
            result.check(202)
            (figures.purging if purging else figures.quiet).append(result)
            figures.purges += runs
            line = f"p50 {result.percentile(50):.2f} ms, p99 {result.percentile(99):.2f} ms"
            extra = f"; purge {runs[0].rows} rows in {runs[0].seconds:.2f} s" if runs else ""
            say(f"{kind:8} {'purging' if purging else 'quiet':8} {rate} req/s: {line}{extra}")
    return figures


def _pin(processes: list[Any], cores: set[int]) -> None:
    for process in processes:
        process.cpu_affinity(sorted(cores))


def _purge(client: redis.Redis, store: Store, runs: list[PurgeRun]) -> None:
    """Half a second into the slice, send the purge as beat does; note when its audit entry (the
    end of the run) appears and what it removed."""
    time.sleep(0.5)
    with store.session() as session:
        before = session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    started = time.monotonic()
    TaskQueue(client).send(PURGE, [])

    def done() -> AuditEntry | None:
        with store.session() as session:
            query = select(AuditEntry).where(AuditEntry.action == "purge")
            if before is not None:
                query = query.where(AuditEntry.id > before)
            return session.scalars(query).first()

    entry = services.wait_for(done, 600, "the purge's audit entry")
    detail = {k: v for k, v in (entry.detail or {}).items() if k != "older_than_days"}
    rows = sum(v for v in detail.values() if isinstance(v, int))
    runs.append(PurgeRun(time.monotonic() - started, rows))


def render(all_figures: list[Figures], seconds: float) -> str:
    lines = [
        "| store | cores | rate (req/s) | intake p50 quiet (ms) | intake p50 purging (ms) "
        "| intake p99 quiet (ms) | intake p99 purging (ms) | purge runs | rows per purge "
        "| purge seconds (median) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in all_figures:
        quiet, purging = LoadResult.combine(f.quiet), LoadResult.combine(f.purging)
        took = sorted(run.seconds for run in f.purges)
        rows = sorted(run.rows for run in f.purges)
        lines.append(
            f"| {f.store} | {'pinned' if f.pinned else 'shared'} | {f.rate} "
            f"| {quiet.percentile(50):.2f} | {purging.percentile(50):.2f} "
            f"| {quiet.percentile(99):.2f} | {purging.percentile(99):.2f} | {len(took)} "
            f"| {rows[len(rows) // 2]:,} | {took[len(took) // 2]:.2f} |"
        )
    lines.append(f"\n{seconds:g} s slices, quiet and purging in turns.")
    return "\n".join(lines)


@click.command()
@click.option("--store", "stores", multiple=True, type=click.Choice(STORES))
@click.option("--rate", type=int, default=200, show_default=True, help="req/s to the intake.")
@click.option("--seconds", type=float, default=6.0, show_default=True, help="Each slice.")
@click.option("--slices", type=int, default=3, show_default=True, help="Pairs of slices.")
@click.option(
    "--conversations", type=int, default=2500, show_default=True,
    help="Expired conversations seeded before each purging slice (8 rows each).",
)  # fmt: skip
@click.option("--postgres-url", envvar="TEST_POSTGRES_URL", default=DEFAULT_POSTGRES_URL)
@click.option(
    "--pin", is_flag=True,
    help="The web server and wrk on core 0, the worker on core 1, as on separate dynos.",
)  # fmt: skip
def main(
    stores: tuple[str, ...],
    rate: int,
    seconds: float,
    slices: int,
    conversations: int,
    postgres_url: str,
    pin: bool,
) -> None:
    """The intake's p50 / p99 at a steady rate, with and without a purge running in the worker."""
    load.wrk_binary()
    work_dir = Path(".tavus-callbacks") / f"bench-purge-{time.strftime('%Y%m%d-%H%M%S')}"
    work_dir.mkdir(parents=True, exist_ok=True)
    found = []
    try:
        for kind in stores or STORES:
            say = lambda line: click.echo(line, err=True)  # noqa: E731
            found.append(
                measure(
                    kind, work_dir, postgres_url, rate, seconds, slices, conversations, say, pin
                )
            )
    except (load.LoadError, services.ServiceError) as exc:
        raise click.ClickException(f"{exc} (logs in {work_dir})") from exc
    shutil.rmtree(work_dir, ignore_errors=True)
    click.echo(render(found, seconds))


if __name__ == "__main__":
    main()
