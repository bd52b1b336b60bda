"""Tables of the event store (SQLAlchemy 2). The schema itself is managed by Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .sealed import Sealed, SealedJSON

ID = String(255)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (no zones) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class EventStatus:
    RECEIVED = "received"  # stored, handler not yet run (or being retried)
    PROCESSED = "processed"
    UNHANDLED = "unhandled"  # valid, but no handler knows its event_type yet
    QUARANTINED = "quarantined"  # passed auth, failed validation: kept with its errors
    FAILED = "failed"  # the handler kept failing: dead-lettered, `replay` sends it again
    FINAL = frozenset({PROCESSED, UNHANDLED, QUARANTINED, FAILED})


class Event(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_key: Mapped[str] = mapped_column(ID, unique=True)
    kind: Mapped[str | None] = mapped_column(String(32), index=True)
    event_type: Mapped[str | None] = mapped_column(ID, index=True)
    conversation_id: Mapped[str | None] = mapped_column(ID, index=True)
    source: Mapped[str] = mapped_column(String(32), default="callback")
    received_at: Mapped[datetime] = mapped_column(index=True)
    occurred_at: Mapped[datetime | None]
    # Content (sealed with ENCRYPTION_KEYS when set: workers/store/sealed.py) is marked Sealed.
    body: Mapped[str] = mapped_column(Sealed)
    errors: Mapped[dict[str, Any] | None] = mapped_column(SealedJSON)
    status: Mapped[str] = mapped_column(String(16), index=True, default=EventStatus.RECEIVED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Sealed)
    processed_at: Mapped[datetime | None]
    # Tasks to send once this event's transaction has committed (a small outbox): cleared once
    # sent, so a crash in between sends them again on redelivery, never loses them.
    pending_tasks: Mapped[list[Any] | None] = mapped_column(SealedJSON)  # alerts quote content
    # What deviated from the documented shape (the tolerant reader took the rest), by field.
    warnings: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Where a failed event failed: "plan" (schema load, dates), "handler", "store".
    failed_stage: Mapped[str | None] = mapped_column(String(32))


class Conversation(Base):
    __tablename__ = "conversations"

    conversation_id: Mapped[str] = mapped_column(ID, primary_key=True)
    replica_id: Mapped[str | None] = mapped_column(ID)
    joined_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    shutdown_reason: Mapped[str | None] = mapped_column(Text)
    shutdown_is_failure: Mapped[bool | None]
    transcript: Mapped[list[Any] | None] = mapped_column(SealedJSON)
    transcript_at: Mapped[datetime | None]
    perception_analysis: Mapped[str | None] = mapped_column(Sealed)
    perception_unavailable_reason: Mapped[str | None] = mapped_column(Sealed)
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Reconciliation with the Tavus API: how often it was pulled, and not before when again.
    reconcile_checks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reconcile_after: Mapped[datetime | None]


class Recording(Base):
    __tablename__ = "recordings"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), primary_key=True
    )
    provider: Mapped[str | None] = mapped_column(String(32))
    uri: Mapped[str | None] = mapped_column(Text)
    bucket: Mapped[str | None] = mapped_column(Text)
    object_key: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[float | None]
    ready_at: Mapped[datetime | None]
    copy_failed_at: Mapped[datetime | None]
    copy_error_code: Mapped[str | None] = mapped_column(Text)
    copy_error_message: Mapped[str | None] = mapped_column(Text)
    ready_event_id: Mapped[str | None] = mapped_column(String(36))
    # Verification of the object in the user's bucket (workers/storage). Each recording_ready
    # starts a new round; a task of an older round finds it stale and stops.
    verification_status: Mapped[str | None] = mapped_column(String(16))
    verification_round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    verification_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    verification_reason: Mapped[str | None] = mapped_column(Text)
    verification_started_at: Mapped[datetime | None]
    verification_checked_at: Mapped[datetime | None]
    verification_next_at: Mapped[datetime | None]
    verification_call_seconds: Mapped[float | None]
    # The alert to send once the result has committed (an outbox, like Event.pending_tasks).
    verification_alert: Mapped[dict[str, Any] | None] = mapped_column(SealedJSON)
    object_size: Mapped[int | None] = mapped_column(BigInteger)
    object_etag: Mapped[str | None] = mapped_column(Text)
    object_checksum: Mapped[str | None] = mapped_column(Text)
    object_content_type: Mapped[str | None] = mapped_column(Text)
    object_last_modified: Mapped[datetime | None]
    object_version: Mapped[str | None] = mapped_column(Text)


class Objective(Base):
    __tablename__ = "objectives"
    __table_args__ = (UniqueConstraint("conversation_id", "objective_name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.conversation_id"))
    objective_name: Mapped[str] = mapped_column(ID)
    output_variables: Mapped[dict[str, Any] | None] = mapped_column(SealedJSON)
    completed_at: Mapped[datetime | None]


class ConversationEventRow:
    """A row one event adds to its conversation's record (a trigger, an action, a delivery)."""

    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.conversation_id"), index=True
    )


class GuardrailTrigger(ConversationEventRow, Base):
    __tablename__ = "guardrail_triggers"

    guardrail: Mapped[str] = mapped_column(Sealed)  # its name says what it guards against
    triggered_at: Mapped[datetime]


class PostCallAction(ConversationEventRow, Base):
    __tablename__ = "post_call_actions"

    tool_name: Mapped[str | None] = mapped_column(ID)
    status: Mapped[str | None] = mapped_column(ID)
    request: Mapped[Any | None] = mapped_column(SealedJSON)
    response: Mapped[Any | None] = mapped_column(SealedJSON)
    executed_at: Mapped[datetime | None]


class ToolDelivery(ConversationEventRow, Base):
    """A signed tool delivery (a post-call action's or an API-delivered tool's call)."""

    __tablename__ = "tool_deliveries"

    tool_name: Mapped[str] = mapped_column(ID)
    tool_call_id: Mapped[str | None] = mapped_column(ID)
    arguments: Mapped[Any | None] = mapped_column(SealedJSON)
    delivered_at: Mapped[datetime]


class StatusRecordMixin:
    """A resource whose status moves forward: later or more final updates win, repeats don't.

    A model with a ``resource_kind`` is the record of that callback kind: the queries, the API,
    the console and the CLI find it by that attribute (``queries.resource_models``), and the
    id its callbacks name is its primary key's column (``video_id``).
    """

    status: Mapped[str] = mapped_column(String(32))
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    status_at: Mapped[datetime]


class Replica(StatusRecordMixin, Base):
    __tablename__ = "replicas"
    resource_kind: ClassVar[str] = "replica"  # /replicas/<id> in the API, console and CLI

    replica_id: Mapped[str] = mapped_column(ID, primary_key=True)
    error_message: Mapped[str | None] = mapped_column(Text)


class Video(StatusRecordMixin, Base):
    __tablename__ = "videos"
    resource_kind: ClassVar[str] = "video"  # /videos/<id> in the API, console and CLI

    video_id: Mapped[str] = mapped_column(ID, primary_key=True)
    video_name: Mapped[str | None] = mapped_column(Text)
    status_details: Mapped[str | None] = mapped_column(Text)
    generation_progress: Mapped[str | None] = mapped_column(String(32))
    download_url: Mapped[str | None] = mapped_column(Text)
    hosted_url: Mapped[str | None] = mapped_column(Text)
    stream_url: Mapped[str | None] = mapped_column(Text)
    replica_id: Mapped[str | None] = mapped_column(ID)
    created_at: Mapped[datetime | None]


class Document(StatusRecordMixin, Base):
    __tablename__ = "documents"
    resource_kind: ClassVar[str] = "document"  # /documents/<id> in the API, console and CLI

    document_id: Mapped[str] = mapped_column(ID, primary_key=True)
    progress: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)


class Alert(Base):
    """One alert per cause: raising the same cause again finds this row and adds nothing."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cause_key: Mapped[str] = mapped_column(String(512), unique=True)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(Sealed)
    text: Mapped[str] = mapped_column(Sealed)
    conversation_id: Mapped[str | None] = mapped_column(ID, index=True)
    # No foreign key: an alert may come from a task that is not processing a stored event.
    event_id: Mapped[str | None] = mapped_column(String(36))
    facts: Mapped[dict[str, Any]] = mapped_column(SealedJSON)
    raised_at: Mapped[datetime] = mapped_column(index=True)


class DeliveryStatus:
    PENDING = "pending"  # not tried yet, or waiting for its next try
    SENDING = "sending"  # a worker holds it until claimed_until
    DELIVERED = "delivered"
    FAILED = "failed"  # permanent error, or retries ran out
    FINAL = frozenset({DELIVERED, FAILED})

    @classmethod
    def settle(cls, delivery: Any, outcome: str, error: str | None, now: datetime) -> None:
        """End a delivery's attempt (an alert's or a forward's): ``delivered``, ``failed``, or
        anything else for back to ``pending``, its claim released."""
        delivery.claimed_until = None
        delivery.last_error = error
        if outcome == "delivered":
            delivery.status = cls.DELIVERED
            delivery.delivered_at = now
        else:
            delivery.status = cls.FAILED if outcome == "failed" else cls.PENDING


class AlertDelivery(Base):
    """An alert on one channel: sent at most once, however often it is asked for."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "channel"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"))
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_until: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class AlertAttempt(Base):
    """One try at one delivery: when, and how it ended."""

    __tablename__ = "alert_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("alert_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16))  # sending, delivered, retrying, failed
    error: Mapped[str | None] = mapped_column(Text)


class ForwardDelivery(Base):
    """One event for one destination (of any type, a Python hook too): done at most once unless
    `redeliver` asks again, however often its task runs."""

    __tablename__ = "forward_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "destination"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # The unique constraint leads with event_id, so it indexes the lookup by event too.
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"))
    destination: Mapped[str] = mapped_column(String(255), index=True)
    # The destination's type when last attempted (webhook, hook, redis_stream, ...): which
    # task delivers it again on redeliver, and what listings show.
    type: Mapped[str] = mapped_column(String(32), server_default="webhook")
    source: Mapped[str] = mapped_column(String(32))  # callback, reconciled, replay
    status: Mapped[str] = mapped_column(String(16), index=True, default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # in this round (redeliver: 0)
    first_attempt_at: Mapped[datetime | None]  # of this round: retries stop some hours after
    claimed_until: Mapped[datetime | None]
    current_attempt_id: Mapped[int | None] = mapped_column(Integer)  # the claim's attempt
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class ForwardAttempt(Base):
    """One try at one forward delivery: when, what came back, how long it took."""

    __tablename__ = "forward_attempts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("forward_deliveries.id"), index=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16))  # sending, delivered, retrying, failed, lost
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None]
    answer: Mapped[str | None] = mapped_column(Sealed)  # the first bytes of the reply
    error: Mapped[str | None] = mapped_column(Text)


class Erasure(Base):
    """What remains of an erased conversation, replica, video or document: its id, when, by
    whom, how many rows went. A later callback for it is acked and dropped, never stored."""

    __tablename__ = "erasures"

    target: Mapped[str] = mapped_column(String(300), primary_key=True)  # "<kind>:<id>"
    erased_at: Mapped[datetime]
    erased_by: Mapped[str] = mapped_column(String(255))
    rows: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    """One action that changed state or revealed content: who, what, on what, how it ended.
    Only ever inserted (and removed after AUDIT_RETENTION_DAYS); it holds no payload content."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(255))  # cli:<user>@<host>, api:<token>, console:…
    action: Mapped[str] = mapped_column(String(64))  # replay, redeliver, erase, purge, sign-in…
    target: Mapped[str | None] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(32))  # done, refused, failed, nothing
    detail: Mapped[dict[str, Any] | None]  # counts and names, never content


class DestinationState(Base):
    """A destination's health, shared by every worker on every host: whether it is paused (by
    FORWARD_<NAME>_PAUSE_AFTER failures in a row, a 410, or a person), since when and why, its
    failures in a row, its last success, and when the next probe may go while it is paused."""

    __tablename__ = "destination_states"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str | None] = mapped_column(String(32))  # as its last attempt recorded it
    created_at: Mapped[datetime]  # first seen: earlier events never hold an ordered one back
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_success_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]  # None: active
    paused_by: Mapped[str | None] = mapped_column(String(255))  # "failures", or who paused it
    pause_reason: Mapped[str | None] = mapped_column(Text)
    pauses: Mapped[int] = mapped_column(Integer, default=0)  # how many times: the alerts' cause
    next_probe_at: Mapped[datetime | None]  # while paused by failures
