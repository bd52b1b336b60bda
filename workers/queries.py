"""Read-only views of the store, as plain JSON-able dicts: what the CLI prints and tests check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ScalarResult, func, select
from sqlalchemy.orm import Session

from workers.storage import state
from workers.store.models import (
    Conversation,
    Document,
    Event,
    GuardrailTrigger,
    Objective,
    PostCallAction,
    Recording,
    Replica,
    ToolDelivery,
    Video,
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
    from workers.alerts import ledger  # the alerts package imports the notifiers: only here

    record = conversation_record(session, conversation_id)
    if record is not None:
        record["alerts"] = ledger.recent_alerts(session, conversation_id=conversation_id)
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
        "joined_at": _iso(convo.joined_at),
        "ended_at": _iso(convo.ended_at),
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
        "provider": row.provider,
        "uri": row.uri,
        "duration_seconds": row.duration_seconds,
        "ready_at": _iso(row.ready_at),
        "copy_failed_at": _iso(row.copy_failed_at),
        "copy_error_code": row.copy_error_code,
        "copy_error_message": row.copy_error_message,
        "verification": state.view(row),
    }


def _objectives(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    order = (Objective.completed_at, Objective.objective_name)
    rows = _of_conversation(session, Objective, conversation_id, *order)
    return [
        {
            "objective_name": row.objective_name,
            "output_variables": row.output_variables,
            "completed_at": _iso(row.completed_at),
        }
        for row in rows
    ]


def _guardrails(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    order = GuardrailTrigger.triggered_at
    rows = _of_conversation(session, GuardrailTrigger, conversation_id, order)
    by_name: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_name.setdefault(row.guardrail, {"guardrail": row.guardrail, "triggered_at": []})
        entry["triggered_at"].append(_iso(row.triggered_at))
    return [{**entry, "count": len(entry["triggered_at"])} for entry in by_name.values()]


def _post_call_actions(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    rows = _of_conversation(session, PostCallAction, conversation_id, PostCallAction.executed_at)
    return [
        {
            "tool_name": row.tool_name,
            "status": row.status,
            "request": row.request,
            "response": row.response,
            "executed_at": _iso(row.executed_at),
        }
        for row in rows
    ]


def _tool_deliveries(session: Session, conversation_id: str) -> list[dict[str, Any]]:
    rows = _of_conversation(session, ToolDelivery, conversation_id, ToolDelivery.delivered_at)
    return [
        {
            "tool_name": row.tool_name,
            "tool_call_id": row.tool_call_id,
            "arguments": row.arguments,
            "delivered_at": _iso(row.delivered_at),
        }
        for row in rows
    ]


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
        "kind": event.kind,
        "event_type": event.event_type,
        "conversation_id": event.conversation_id,
        "resource_id": resource_id(event),
        "status": event.status,
        "source": event.source,
        "received_at": _iso(event.received_at),
        "occurred_at": _iso(event.occurred_at),
        "attempts": event.attempts,
        "last_error": event.last_error,
        "errors": event.errors,
        "warnings": event.warnings,
        "failed_stage": event.failed_stage,
    }


# The field naming the resource an event is about, by kind; the rest are about a conversation.
RESOURCE_ID_FIELDS = {"replica": "replica_id", "video": "video_id", "document": "document_id"}


def resource_id(event: Event) -> str | None:
    """The conversation, replica, video or document the event belongs to (None: unknown)."""
    field = RESOURCE_ID_FIELDS.get(event.kind or "")
    if field is None:
        return event.conversation_id
    try:
        body = orjson.loads(event.body)
    except orjson.JSONDecodeError:
        return None
    value = body.get(field) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


RESOURCE_MODELS = {"replica": Replica, "video": Video, "document": Document}


def resource_record(session: Session, kind: str, resource_id: str) -> dict[str, Any] | None:
    """A replica, video or document: its columns, dates as ISO strings."""
    row = session.get(RESOURCE_MODELS[kind], resource_id)
    if row is None:
        return None
    values = {column.key: getattr(row, column.key) for column in row.__table__.columns}
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in values.items()}
