"""Reconciliation: recover from the Tavus API what its callbacks never delivered.

Tavus retries nothing, so a callback lost on the way (our outage, theirs, the network) is gone
unless we ask. A conversation that ended (its shutdown arrived, or it went quiet long ago) and
still lacks its transcript, perception analysis or recording after a grace period is pulled
with ``GET /v2/conversations/{id}?verbose=true``. Every event there that the store does not
hold is fed through the same pipeline as a callback (classified and keyed by ``schemas/``, one
PROCESS_EVENT message), marked ``reconciled``; a real callback arriving later has the same key
and changes nothing.

Bounded: at most ``reconcile_batch_size`` conversations per run, each pulled at most
``MAX_CHECKS`` times, further and further apart (grace x 2, x 4...), since perception and
recordings exist only when enabled. The first 429 or 5xx ends the run and holds that
conversation back for its ``Retry-After`` (or one period).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from schemas.classify import classify
from schemas.messages import EventMessage, event_message
from schemas.settings import Settings
from workers.store.db import Store
from workers.store.models import Conversation, Event, Recording
from workers.tavus_api import ConversationNotFound, TavusAPI, TavusAPIError, TavusUnavailable

log = logging.getLogger(__name__)

Publish = Callable[[EventMessage], None]

MAX_CHECKS = 4
# A conversation whose shutdown never arrived counts as ended this long after it was first seen.
MISSED_SHUTDOWN_AFTER = timedelta(hours=4)


@dataclass
class RunReport:
    checked: int = 0  # conversations pulled from the API
    fed: int = 0  # events the store lacked, sent through the pipeline
    stopped: str | None = None  # why the run ended early, if it did


def run(
    store: Store, api: TavusAPI, publish: Publish, settings: Settings, now: datetime | None = None
) -> RunReport:
    """One reconciliation pass over the conversations that are due."""
    now = now or datetime.now(UTC)
    grace = timedelta(seconds=settings.reconcile_grace_seconds)
    with store.session() as session:
        due = due_conversations(session, now, grace, settings.reconcile_batch_size)
    report = RunReport()
    for conversation_id in due:
        try:
            payload = api.conversation(conversation_id)
        except TavusUnavailable as exc:
            wait = exc.retry_after
            wait = settings.reconcile_interval_seconds if wait is None else wait
            _set(store, conversation_id, reconcile_after=now + timedelta(seconds=wait))
            report.stopped = f"{exc}; conversation {conversation_id} held back {wait:.0f}s"
            break
        except ConversationNotFound:
            _set(store, conversation_id, reconcile_checks=MAX_CHECKS)
            continue
        except TavusAPIError as exc:
            report.stopped = str(exc)
            break
        messages = missed_messages(store, conversation_id, payload, now)
        for message in messages:
            publish(message)
        _checked(store, conversation_id, now, grace)
        report.checked += 1
        report.fed += len(messages)
    if report.stopped:
        log.warning("reconciliation stopped early: %s", report.stopped)
    return report


def due_conversations(session: Session, now: datetime, grace: timedelta, limit: int) -> list[str]:
    """Ended past the grace period, still missing something, and not checked too often."""
    ended = Conversation.ended_at <= now - grace
    went_quiet = and_(
        Conversation.ended_at.is_(None),
        Conversation.first_seen_at <= now - grace - MISSED_SHUTDOWN_AFTER,
    )
    missing = or_(
        Conversation.transcript_at.is_(None),
        and_(
            Conversation.perception_analysis.is_(None),
            Conversation.perception_unavailable_reason.is_(None),
        ),
        and_(Recording.ready_at.is_(None), Recording.copy_failed_at.is_(None)),
    )
    not_held = or_(Conversation.reconcile_after.is_(None), Conversation.reconcile_after <= now)
    query = (
        select(Conversation.conversation_id)
        .outerjoin(Recording, Recording.conversation_id == Conversation.conversation_id)
        .where(
            or_(ended, went_quiet),
            missing,
            not_held,
            Conversation.reconcile_checks < MAX_CHECKS,
        )
        .order_by(
            func.coalesce(
                Conversation.reconcile_after, Conversation.ended_at, Conversation.first_seen_at
            )
        )
        .limit(limit)
    )
    return list(session.scalars(query))


def missed_messages(
    store: Store, conversation_id: str, payload: dict[str, Any], now: datetime
) -> list[EventMessage]:
    """A PROCESS_EVENT message for each event in ``payload`` whose key the store lacks."""
    received_at = now.timestamp()
    candidates: dict[str, EventMessage] = {}
    for item in payload.get("events") or []:
        if not isinstance(item, dict) or not isinstance(item.get("event_type"), str):
            continue
        body = {**item, "conversation_id": item.get("conversation_id", conversation_id)}
        if body["conversation_id"] != conversation_id:
            continue  # not this conversation's: nothing to trust it for
        raw = orjson.dumps(body)
        verdict = classify(body, raw, hint="conversation")
        message = event_message(verdict, raw, received_at, source="reconciled")
        candidates.setdefault(message["event_key"], message)
    if not candidates:
        return []
    with store.session() as session:
        query = select(Event.event_key).where(Event.event_key.in_(list(candidates)))
        known = set(session.scalars(query))
    return [message for key, message in candidates.items() if key not in known]


def _checked(store: Store, conversation_id: str, now: datetime, grace: timedelta) -> None:
    with store.session() as session:
        convo = session.get(Conversation, conversation_id, with_for_update=True)
        convo.reconcile_checks += 1
        convo.reconcile_after = now + grace * 2**convo.reconcile_checks


def _set(store: Store, conversation_id: str, **values: Any) -> None:
    with store.session() as session:
        convo = session.get(Conversation, conversation_id, with_for_update=True)
        for name, value in values.items():
            setattr(convo, name, value)
