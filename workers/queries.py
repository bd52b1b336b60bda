"""Read-only views of the store, as plain JSON-able dicts: what the CLI prints and tests check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ScalarResult, func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from schemas.times import iso
from workers.storage import state
from workers.store.models import (
    Alert,
    AlertAttempt,
    AlertDelivery,
    Base,
    Conversation,
    DeliveryStatus,
    Event,
    ForwardAttempt,
    ForwardDelivery,
    GuardrailTrigger,
    Objective,
    PostCallAction,
    Recording,
    ToolDelivery,
)


def conversation_status(convo: Conversation) -> str:
    if convo.shutdown_is_failure:
        return "failed"
    if convo.ended_at is not None:
        return "ended"
    if convo.joined_at is not None:
        return "active"
    return "pending"


def conversation_view(session: Session, conversation_id: str) -> dict[str, Any] | None:
    """What `conversation --json` and the API's conversations/<id> answer: the record and its
    alerts (None when no event names the conversation)."""
    record = conversation_record(session, conversation_id)
    if record is not None:
        record["alerts"] = recent_alerts(session, conversation_id=conversation_id)
    return record


def conversation_record(session: Session, conversation_id: str) -> dict[str, Any] | None:
    """Everything known of one conversation, assembled from its events; None if unknown."""
    convo = session.get(Conversation, conversation_id)
    events = _events(session, conversation_id)
    if convo is None and not events:
        return None
    record: dict[str, Any] = {"conversation_id": conversation_id, "status": "pending"}
    if convo is not None:
        record.update(_conversation_fields(convo))
    record["recording"] = _recording(session.get(Recording, conversation_id))
    record["objectives"] = _objectives(session, conversation_id)
    record["guardrails"] = _guardrails(session, conversation_id)
    record["post_call_actions"] = _post_call_actions(session, conversation_id)
    record["tool_deliveries"] = _tool_deliveries(session, conversation_id)
    record["events"] = [event_summary(event) for event in events]
    # What deviated from the documented shapes, event by event: the record above holds the rest.
    record["warnings"] = [
        {"event_id": event.id, "event_type": event.event_type, "warnings": event.warnings}
        for event in events
        if event.warnings
    ]
    return record


def _conversation_fields(convo: Conversation) -> dict[str, Any]:
    return {
        "replica_id": convo.replica_id,
        "status": conversation_status(convo),
        "joined_at": iso(convo.joined_at),
        "ended_at": iso(convo.ended_at),
        "shutdown_reason": convo.shutdown_reason,
        "shutdown_is_failure": convo.shutdown_is_failure,
        "transcript": convo.transcript,
        "perception_analysis": convo.perception_analysis,
        "perception_unavailable_reason": convo.perception_unavailable_reason,
    }


def _recording(row: Recording | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        **_columns(row, "provider", "uri", "duration_seconds", "ready_at", "copy_failed_at"),
        **_columns(row, "copy_error_code", "copy_error_message"),
        "verification": state.view(row),
    }


def _objectives(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    order = (Objective.completed_at, Objective.objective_name)
    rows = _of_conversation(session, Objective, conversation_id, *order)
    return [_columns(row, "objective_name", "output_variables", "completed_at") for row in rows]


def _guardrails(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    order = GuardrailTrigger.triggered_at
    rows = _of_conversation(session, GuardrailTrigger, conversation_id, order)
    by_name: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_name.setdefault(row.guardrail, {"guardrail": row.guardrail, "triggered_at": []})
        entry["triggered_at"].append(iso(row.triggered_at))
    return [{**entry, "count": len(entry["triggered_at"])} for entry in by_name.values()]


def _post_call_actions(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    rows = _of_conversation(session, PostCallAction, conversation_id, PostCallAction.executed_at)
    columns = ("tool_name", "status", "request", "response", "executed_at")
    return [_columns(row, *columns) for row in rows]


def _tool_deliveries(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    rows = _of_conversation(session, ToolDelivery, conversation_id, ToolDelivery.delivered_at)
    columns = ("tool_name", "tool_call_id", "arguments", "delivered_at")
    return [_columns(row, *columns) for row in rows]


def _columns(row: Any, *names: str) -> dict[str, Any]:
    """``{name: value}`` for these columns of ``row``, times in ISO 8601."""
    values = ((name, getattr(row, name)) for name in names)
    return {name: iso(value) if isinstance(value, datetime) else value for name, value in values}


def _of_conversation(
    session: Session, model: type[Any], conversation_id: str, *order: Any
) -> ScalarResult[Any]:
    """One conversation's rows of a per-conversation table, in ``order``."""
    query = select(model).where(model.conversation_id == conversation_id).order_by(*order)
    return session.scalars(query)


def _events(session: Session, conversation_id: str) -> list[Event]:
    query = (
        select(Event)
        .where(Event.conversation_id == conversation_id)
        # In time order: when it happened, or (guardrails, objectives carry no time) arrived.
        .order_by(func.coalesce(Event.occurred_at, Event.received_at), Event.received_at)
    )
    return list(session.scalars(query))


def recent_events(
    session: Session,
    limit: int = 50,
    kind: str | None = None,
    status: str | None = None,
    conversation_id: str | None = None,
    event_type: str | None = None,
    warnings: bool = False,
) -> list[dict[str, Any]]:
    """Newest first; ``warnings``: only events the tolerant reader took with warnings."""
    query = select(Event).order_by(Event.received_at.desc()).limit(limit)
    if warnings:
        query = query.where(Event.warnings.is_not(None))
    for column, value in (
        (Event.kind, kind),
        (Event.status, status),
        (Event.conversation_id, conversation_id),
        (Event.event_type, event_type),
    ):
        if value is not None:
            query = query.where(column == value)
    return [event_summary(event) for event in session.scalars(query)]


def event_summary(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.id,
        **_columns(event, "kind", "event_type", "conversation_id"),
        "resource_id": resource_id(event),
        **_columns(event, "status", "source", "received_at", "occurred_at", "attempts"),
        **_columns(event, "last_error", "errors", "warnings", "failed_stage"),
    }


def resource_models() -> dict[str, type[Base]]:
    """The kinds with a record of their own, by kind: every model naming its ``resource_kind``."""
    found = {
        mapper.class_.resource_kind: mapper.class_
        for mapper in Base.registry.mappers
        if "resource_kind" in vars(mapper.class_)
    }
    return dict(sorted(found.items()))


def _id_field(model: type[Base]) -> str:
    """The field of a callback naming its record: the model's primary key (``video_id``)."""
    return sa_inspect(model).primary_key[0].name


def resource_id(event: Event) -> str | None:
    """The conversation, replica, video or document the event belongs to (None: unknown)."""
    model = resource_models().get(event.kind or "")
    if model is None:  # the rest are about a conversation
        return event.conversation_id
    field = _id_field(model)
    try:
        body = orjson.loads(event.body)
    except orjson.JSONDecodeError:
        return None
    value = body.get(field) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def resource_record(session: Session, kind: str, resource_id: str) -> dict[str, Any] | None:
    """A replica, video or document: its columns, dates as ISO strings."""
    row = session.get(resource_models()[kind], resource_id)
    if row is None:
        return None
    return _columns(row, *(column.key for column in row.__table__.columns))


# --- alerts and deliveries: what `tavus-callbacks alerts` / `deliveries` print ---------------


def alert_json(alert: Alert) -> dict[str, Any]:
    """A stored alert as JSON: the same keys as the alert a channel sends."""
    return {
        "alert_id": alert.id,
        **_columns(alert, "cause_key", "severity", "title", "text", "conversation_id", "event_id"),
        "facts": alert.facts or {},
        "raised_at": iso(alert.raised_at),
    }


def recent_alerts(
    session: Session,
    limit: int = 50,
    conversation_id: str | None = None,
    severity: str | None = None,
) -> list[dict[str, Any]]:
    """Alerts newest first, each with its deliveries and their attempts."""
    query = select(Alert).order_by(Alert.raised_at.desc()).limit(limit)
    if conversation_id is not None:
        query = query.where(Alert.conversation_id == conversation_id)
    if severity is not None:
        query = query.where(Alert.severity == severity)
    return alerts_json(session, list(session.scalars(query)))


def alerts_json(session: Session, alerts: list[Alert]) -> list[dict[str, Any]]:
    """Alerts as JSON, each with its deliveries and their attempts (the CLI's and the console's
    view)."""
    deliveries = _deliveries(session, [alert.id for alert in alerts])
    return [{**alert_json(alert), "deliveries": deliveries.get(alert.id, [])} for alert in alerts]


def _deliveries(session: Session, alert_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not alert_ids:
        return {}
    rows = session.scalars(select(AlertDelivery).where(AlertDelivery.alert_id.in_(alert_ids)))
    deliveries = sorted(rows, key=lambda d: d.id)  # made in route order, the log first
    attempts: dict[int, list[dict[str, Any]]] = {}
    query = (
        select(AlertAttempt)
        .where(AlertAttempt.delivery_id.in_([d.id for d in deliveries]))
        .order_by(AlertAttempt.number)
    )
    for attempt in session.scalars(query):
        attempts.setdefault(attempt.delivery_id, []).append(
            {
                "number": attempt.number,
                "started_at": iso(attempt.started_at),
                "finished_at": iso(attempt.finished_at),
                "outcome": attempt.outcome,
                "error": attempt.error,
            }
        )
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_alert.setdefault(d.alert_id, []).append(
            {
                "channel": d.channel,
                "status": d.status,
                "attempts": d.attempts,
                "delivered_at": iso(d.delivered_at),
                "last_error": d.last_error,
                "history": attempts.get(d.id, []),
            }
        )
    return by_alert


def list_deliveries(
    session: Session,
    destination: str | None = None,
    failed: bool = False,
    event_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries newest first, each with its event's type and every attempt."""
    query = (
        select(ForwardDelivery, Event.kind, Event.event_type, Event.conversation_id)
        .join(Event, Event.id == ForwardDelivery.event_id)
        .order_by(ForwardDelivery.id.desc())
        .limit(limit)
    )
    if destination is not None:
        query = query.where(ForwardDelivery.destination == destination.lower())
    if failed:
        query = query.where(ForwardDelivery.status == DeliveryStatus.FAILED)
    if event_id is not None:
        query = query.where(ForwardDelivery.event_id == event_id)
    rows = session.execute(query).all()
    history = _attempts(session, [row[0].id for row in rows])
    return [
        {
            "event_id": d.event_id,
            "destination": d.destination,
            "type": d.type,
            "kind": kind,
            "event_type": event_type,
            "conversation_id": conversation_id,
            "source": d.source,
            "status": d.status,
            "attempts": len(history.get(d.id, [])),
            "delivered_at": iso(d.delivered_at),
            "last_error": d.last_error,
            "history": history.get(d.id, []),
        }
        for d, kind, event_type, conversation_id in rows
    ]


def _attempts(session: Session, delivery_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    if not delivery_ids:
        return found
    query = (
        select(ForwardAttempt)
        .where(ForwardAttempt.delivery_id.in_(delivery_ids))
        .order_by(ForwardAttempt.id)
    )
    for attempt in session.scalars(query):
        found.setdefault(attempt.delivery_id, []).append(
            {
                "started_at": iso(attempt.started_at),
                "finished_at": iso(attempt.finished_at),
                "outcome": attempt.outcome,
                "status_code": attempt.status_code,
                "latency_ms": attempt.latency_ms,
                "answer": attempt.answer,
                "error": attempt.error,
            }
        )
    return found
