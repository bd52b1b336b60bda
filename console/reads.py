"""What the console and its API read from the store: pages of events, conversations, alerts and
deliveries, one event in full, and the overview's counts. Plain JSON-able dicts, as
``workers.queries`` returns, whose record shapes these reuse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, and_, func, not_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from schemas.times import iso
from workers import queries
from workers.store import search
from workers.store.models import (
    Alert,
    AlertDelivery,
    Conversation,
    DeliveryStatus,
    Event,
    EventStatus,
    ForwardDelivery,
)

from . import cursor


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"data": self.data, "next_cursor": self.next_cursor}


def keyset_page(
    session: Session,
    query: Select,
    at: InstrumentedAttribute,
    key: InstrumentedAttribute,
    args: dict[str, Any],
    serialise: Callable[[Session, list[Any]], list[dict[str, Any]]],
) -> Page:
    """Newest first by (``at``, ``key``); the cursor is the last row's pair, and the next page
    starts strictly after it."""
    if args.get("cursor"):
        last_at, last_key = cursor.decode(args["cursor"])
        query = query.where(or_(at < last_at, and_(at == last_at, key < last_key)))
    limit = args["limit"]
    rows = list(session.scalars(query.order_by(at.desc(), key.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows and more else None
    next_cursor = cursor.encode(getattr(last, at.key), getattr(last, key.key)) if last else None
    return Page(serialise(session, rows), next_cursor)


# --- events ------------------------------------------------------------------------------------


def events_page(session: Session, args: dict[str, Any]) -> Page:
    query = select(Event).where(*event_filters(args))
    return keyset_page(
        session,
        query,
        Event.received_at,
        Event.id,
        args,
        lambda _s, rows: [queries.event_summary(e) for e in rows],
    )


def event_filters(args: dict[str, Any]) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    for column, name in (
        (Event.kind, "kind"),
        (Event.event_type, "type"),
        (Event.status, "status"),
        (Event.conversation_id, "conversation"),
    ):
        if args.get(name) is not None:
            found.append(column == args[name])
    if args.get("since") is not None:
        found.append(Event.received_at >= args["since"])
    if args.get("until") is not None:
        found.append(Event.received_at < args["until"])
    if args.get("resource") is not None:
        found.append(names_resource(args["resource"]))
    return found


def names_resource(resource_id: str) -> ColumnElement[bool]:
    """Events whose raw body holds ``resource_id`` as a JSON string: a replica's training
    callbacks and the conversations it joined, a video's, a document's.

    The body is stored as sent, so this matches the quoted id in the text rather than parsing
    every body in SQL (which a body kept for being malformed would fail); encrypted, only the
    resource's own callbacks are found.
    """
    quoted = orjson.dumps(resource_id).decode()
    escaped = quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    # With ENCRYPTION_KEYS the body is sealed and never matches: its own callbacks are still
    # found by their key ("<kind>:<id>:...").
    own = (
        Event.event_key.startswith(f"{kind}:{resource_id}:", autoescape=True)
        for kind in queries.resource_models()
    )
    return or_(Event.body.like(f"%{escaped}%", escape="\\"), *own)


def event_record(session: Session, event_id: str) -> dict[str, Any] | None:
    """One event in full: its summary, the raw body as received, its attempts, warnings and
    the deliveries made for it."""
    event = session.get(Event, event_id)
    if event is None:
        return None
    record = queries.event_summary(event)
    record.update(
        {
            "event_key": event.event_key,
            "body": event.body,
            "processed_at": iso(event.processed_at),
            "warnings": getattr(event, "warnings", None),  # the tolerant reader's, once stored
            "alerts": queries.alerts_json(session, _alerts_of_event(session, event_id)),
            "deliveries": forward_deliveries_of_event(session, event_id),
            "alert_deliveries": _deliveries_of_event(session, event_id),
        }
    )
    return record


def forward_deliveries_of_event(session: Session, event_id: str) -> list[dict[str, Any]]:
    """The event's deliveries to the user's destinations, every attempt included (as
    ``tavus-callbacks deliveries --event`` prints them), each with its id."""
    ids = dict(
        session.execute(
            select(ForwardDelivery.destination, ForwardDelivery.id).where(
                ForwardDelivery.event_id == event_id
            )
        ).all()
    )
    rows = queries.list_deliveries(session, event_id=event_id, limit=1000)
    return [
        {**row, "delivery_id": ids.get(row["destination"]), "type": "forward",
         "redeliverable": True}
        for row in rows
    ]  # fmt: skip


def _deliveries_of_event(session: Session, event_id: str) -> list[dict[str, Any]]:
    query = (
        select(AlertDelivery, Alert)
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(Alert.event_id == event_id)
        .order_by(AlertDelivery.id)
    )
    return [alert_delivery_summary(d, a) for d, a in session.execute(query)]


def _alerts_of_event(session: Session, event_id: str) -> list[Alert]:
    query = select(Alert).where(Alert.event_id == event_id).order_by(Alert.raised_at)
    return list(session.scalars(query))


def find_id(session: Session, wanted: str) -> tuple[str, str] | None:
    """What an id names: ("event", id), ("conversation", id), or a replica, video or document."""
    wanted = wanted.strip()
    if session.get(Event, wanted) is not None:
        return "event", wanted
    by_key = session.scalars(select(Event.id).where(Event.event_key == wanted)).first()
    if by_key is not None:
        return "event", by_key
    if (
        session.get(Conversation, wanted) is not None
        or session.scalars(select(Event.id).where(Event.conversation_id == wanted).limit(1)).first()
    ):
        return "conversation", wanted
    for kind in queries.resource_models():
        if queries.resource_record(session, kind, wanted) is not None:
            return kind, wanted
    return None


# --- conversations ----------------------------------------------------------------------------


def conversations_page(session: Session, args: dict[str, Any]) -> Page:
    filters = []
    if args.get("status") is not None:
        filters.append(conversation_status_is(args["status"]))
    if args.get("since") is not None:
        filters.append(Conversation.first_seen_at >= args["since"])
    if args.get("q") is not None:
        return search_page(session, args, filters)
    query = select(Conversation).where(*filters)
    return keyset_page(
        session,
        query,
        Conversation.first_seen_at,
        Conversation.conversation_id,
        args,
        lambda _s, rows: [conversation_summary(c) for c in rows],
    )


def search_page(session: Session, args: dict[str, Any], filters: list[ColumnElement[bool]]) -> Page:
    """The conversations whose transcript holds ``q``, best first, each with its ``match``."""
    after = cursor.decode_position(args["cursor"]) if args.get("cursor") else 0
    limit = args["limit"]
    found = search.search(session, args["q"], *filters, limit=limit + 1, offset=after)
    data = [conversation_summary(convo) | {"match": match.as_json()} for convo, match in found]
    more = len(data) > limit
    return Page(data[:limit], cursor.encode_position(after + limit) if more else None)


def conversation_status_is(status: str) -> ColumnElement[bool]:
    """``queries.conversation_status`` as SQL: failed, else ended, else active, else pending."""
    failed = Conversation.shutdown_is_failure.is_(True)
    if status == "failed":
        return failed
    ended = Conversation.ended_at.is_not(None)
    if status == "ended":
        return and_(not_(failed), ended)
    joined = Conversation.joined_at.is_not(None)
    if status == "active":
        return and_(not_(failed), not_(ended), joined)
    return and_(not_(failed), not_(ended), not_(joined))


def conversation_summary(convo: Conversation) -> dict[str, Any]:
    return {
        "conversation_id": convo.conversation_id,
        "replica_id": convo.replica_id,
        "status": queries.conversation_status(convo),
        "joined_at": iso(convo.joined_at),
        "ended_at": iso(convo.ended_at),
        "shutdown_reason": convo.shutdown_reason,
        "first_seen_at": iso(convo.first_seen_at),
        "updated_at": iso(convo.updated_at),
    }


def conversation_alerts(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    query = select(Alert).where(Alert.conversation_id == conversation_id).order_by(Alert.raised_at)
    return queries.alerts_json(session, list(session.scalars(query)))


# --- alerts and deliveries --------------------------------------------------------------------


def alerts_page(session: Session, args: dict[str, Any]) -> Page:
    query = select(Alert)
    if args.get("severity") is not None:
        query = query.where(Alert.severity == args["severity"])
    if args.get("conversation") is not None:
        query = query.where(Alert.conversation_id == args["conversation"])
    return keyset_page(session, query, Alert.raised_at, Alert.id, args, queries.alerts_json)


def alert_deliveries_page(session: Session, args: dict[str, Any]) -> Page:
    """Alert deliveries, newest first by id; ``status`` filters (the page asks failed first)."""
    query = select(AlertDelivery, Alert).join(Alert, Alert.id == AlertDelivery.alert_id)
    if args.get("status") is not None:
        query = query.where(AlertDelivery.status == args["status"])
    return id_page(session, query, AlertDelivery.id, args, alert_delivery_summary)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def id_page(
    session: Session,
    query: Select,
    key: InstrumentedAttribute,
    args: dict[str, Any],
    serialise: Callable[..., dict[str, Any]],
) -> Page:
    """Newest first by an autoincrement ``key`` (the first entity of each row): ids only grow,
    so rows inserted while paging land before the cursor."""
    if args.get("cursor"):
        _at, last_id = cursor.decode(args["cursor"])
        if not isinstance(last_id, int):
            raise cursor.BadCursor("not a cursor of this list; start again without one")
        query = query.where(key < last_id)
    limit = args["limit"]
    rows = session.execute(query.order_by(key.desc()).limit(limit + 1)).all()
    page, more = rows[:limit], len(rows) > limit
    last = page[-1][0] if page and more else None
    return Page([serialise(*row) for row in page], cursor.encode(_EPOCH, last.id) if last else None)


def destinations(session: Session, settings: Any) -> list[dict[str, Any]]:
    """Each destination's state (``workers.forwarding.destinations_table``): the API's
    ``/destinations`` and the table atop the deliveries page."""
    from workers import forwarding  # the destinations, loaded only when they are shown

    return forwarding.destinations_table(session, settings)


def deliveries_page(session: Session, args: dict[str, Any]) -> Page:
    """Deliveries to the user's destinations (of every type, hooks too), newest first by id."""
    query = select(ForwardDelivery, Event.kind, Event.event_type, Event.conversation_id).join(
        Event, Event.id == ForwardDelivery.event_id
    )
    if args.get("status") is not None:
        query = query.where(ForwardDelivery.status == args["status"])
    if args.get("destination") is not None:
        query = query.where(ForwardDelivery.destination == args["destination"].lower())
    if args.get("event") is not None:
        query = query.where(ForwardDelivery.event_id == args["event"])
    return id_page(session, query, ForwardDelivery.id, args, delivery_summary)


def delivery_summary(
    delivery: ForwardDelivery, kind: str | None, event_type: str | None, conversation_id: str | None
) -> dict[str, Any]:
    return {
        "delivery_id": delivery.id,
        "type": "forward",
        "destination": delivery.destination,
        "destination_type": delivery.type,  # "type" says forward (or alert), as it always did
        "event_id": delivery.event_id,
        "kind": kind,
        "event_type": event_type,
        "conversation_id": conversation_id,
        "source": delivery.source,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "first_attempt_at": iso(delivery.first_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
        "last_error": delivery.last_error,
        "redeliverable": True,  # any delivery can be sent again (redeliver, as the CLI)
    }


def alert_delivery_summary(delivery: AlertDelivery, alert: Alert) -> dict[str, Any]:
    return {
        "delivery_id": delivery.id,
        "type": "alert",
        "destination": delivery.channel,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "delivered_at": iso(delivery.delivered_at),
        "last_error": delivery.last_error,
        "alert_id": alert.id,
        "alert_title": alert.title,
        "severity": alert.severity,
        "event_id": alert.event_id,
        "conversation_id": alert.conversation_id,
        "raised_at": iso(alert.raised_at),
        "redeliverable": delivery.status == DeliveryStatus.FAILED,
    }


# --- overview ---------------------------------------------------------------------------------


def overview(session: Session, now: datetime | None = None) -> dict[str, Any]:
    """The store's side of the overview (the broker's is ``schemas.broker.queue_depths``)."""
    now = now or datetime.now(UTC)
    oldest = session.scalar(
        select(func.min(Event.received_at)).where(Event.status == EventStatus.RECEIVED)
    )
    last_reconciled = session.scalar(
        select(func.max(Event.received_at)).where(Event.source == "reconciled")
    )
    return {
        "events_last_hour": _count_by_status(session, now - timedelta(hours=1)),
        "events_last_day": _count_by_status(session, now - timedelta(days=1)),
        "failed_events": _count(session, Event, Event.status == EventStatus.FAILED),
        "failed_deliveries": _count(
            session, ForwardDelivery, ForwardDelivery.status == DeliveryStatus.FAILED
        ),
        "failed_alert_deliveries": _count(
            session, AlertDelivery, AlertDelivery.status == DeliveryStatus.FAILED
        ),
        "undelivered_alerts": _count(
            session, AlertDelivery, AlertDelivery.status.not_in(DeliveryStatus.FINAL)
        ),
        "alerts_last_day": _count(session, Alert, Alert.raised_at >= now - timedelta(days=1)),
        "oldest_pending_age_seconds": (now - oldest).total_seconds() if oldest else None,
        "last_reconciled_event_at": iso(last_reconciled),
        "conversations_reconciled": _count(
            session, Conversation, Conversation.reconcile_checks > 0
        ),
    }


def _count_by_status(session: Session, since: datetime) -> dict[str, int]:
    query = (
        select(Event.status, func.count()).where(Event.received_at >= since).group_by(Event.status)
    )
    return {status: count for status, count in session.execute(query)}


def _count(session: Session, model: type, *where: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def timeline(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation's events in the order they happened (received time when Tavus gave none)."""
    return sorted(events, key=lambda e: (e["occurred_at"] or e["received_at"], e["received_at"]))
