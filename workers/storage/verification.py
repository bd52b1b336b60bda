"""One verification attempt of a conversation's recording, and what comes next.

Three steps, so no database lock is held during a network call:

1. claim: in a short transaction, count the attempt (or stop: stale round, already final);
2. inspect: parse, allow-list, then ask the provider's SDK (no transaction open);
3. record: in a short transaction, store what was found and decide: done, or retry in N s.

Retry by cause: not found and transient failures are tried again with exponential backoff and
jitter until ``RECORDING_WAIT_SECONDS`` after the first attempt; permanent failures are final at
once. Delays come from ``workers.retry`` (below half the broker's visibility timeout). A final
result other than ``verified`` leaves one alert in the row's outbox, sent after the commit (and
sent again by a redelivery if the process died in between; the alerts side keeps one per
``cause_key``).
This module knows nothing of Celery; ``workers.tasks.storage`` wraps it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.messages import RAISE_ALERT
from schemas.settings import Settings
from workers import retry
from workers.alerts.pipeline import pipeline_failure
from workers.store.db import Store
from workers.store.models import Recording

from . import state, unverified
from .base import ObjectFacts, StorageVerifier
from .errors import Missing, StorageRefused, StorageUnavailable
from .locations import LocationRefused, ObjectLocation, redact
from .verifiers import allowlist, locate, verifier_for

log = logging.getLogger(__name__)

SendTask = Callable[[str, list[Any]], None]
VerifierLookup = Callable[[str, Settings], StorageVerifier]

TRANSIENT = "transient"  # an attempt's finding, never a final status


@dataclass(frozen=True)
class Outcome:
    status: str  # a state.* status, or "stale" when a newer round or no recording exists
    retry_in: float | None = None  # seconds until the next attempt; None: nothing more to do


@dataclass(frozen=True)
class Claim:
    """The recording as it was when this attempt was counted."""

    conversation_id: str
    round: int
    attempt: int
    started_at: datetime
    ready_at: datetime | None
    event_id: str | None
    provider: str | None
    uri: str | None  # the handler writes the older bucket_name + s3_key as an s3:// URI


@dataclass(frozen=True)
class Finding:
    """What one attempt found."""

    status: str  # VERIFIED, MISSING, TRANSIENT, ACCESS_DENIED, REFUSED, ERROR or SKIPPED
    reason: str | None = None
    facts: ObjectFacts | None = None
    where: ObjectLocation | None = None
    call_seconds: float | None = None


def verify(
    store: Store,
    settings: Settings,
    conversation_id: str,
    round_: int | None,
    send: SendTask,
    verifiers: VerifierLookup = verifier_for,
) -> Outcome:
    claimed = _claim(store, conversation_id, round_, send)
    if isinstance(claimed, Outcome):
        return claimed
    finding = inspect(claimed, settings, verifiers)
    return _record(store, settings, claimed, finding, send)


def inspect(claim: Claim, settings: Settings, verifiers: VerifierLookup = verifier_for) -> Finding:
    """Parse and allow-list the location, then (only then) ask the provider."""
    allowed = allowlist(settings)
    if not allowed:
        return Finding(state.SKIPPED, "RECORDING_LOCATIONS is empty: verification is off")
    try:
        where = locate(claim.provider, claim.uri, settings)
    except LocationRefused as exc:
        return Finding(state.REFUSED, exc.reason)
    except ValueError as exc:  # the provider's own settings are wrong (a connection string)
        return Finding(state.ERROR, str(exc))
    try:
        allowed.check(where)
    except LocationRefused as exc:
        return Finding(state.REFUSED, exc.reason, where=where)
    started = time.monotonic()
    try:
        facts = verifiers(where.provider, settings).stat(where)
    except Missing as exc:
        return Finding(state.MISSING, exc.reason, where=where, call_seconds=_since(started))
    except StorageUnavailable as exc:
        return Finding(TRANSIENT, exc.reason, where=where, call_seconds=_since(started))
    except StorageRefused as exc:
        return Finding(exc.status, exc.reason, where=where, call_seconds=_since(started))
    except Exception as exc:  # a boundary: an SDK surprise is recorded and alerted, not lost
        log.exception("verifying %s failed unexpectedly", where.uri)
        return Finding(state.ERROR, f"{type(exc).__name__}: {exc}"[:500], where=where)
    if facts.size <= 0:
        return Finding(
            state.MISSING, "the object is empty (0 bytes)", facts, where, _since(started)
        )
    return Finding(state.VERIFIED, None, facts, where, _since(started))


def dead_letter(
    store: Store,
    conversation_id: str,
    round_: int | None,
    error: BaseException,
    attempts: int,
    send: SendTask,
) -> Outcome:
    """The task kept failing for a reason the store cannot explain (a bug, a bad row): end the
    round as ``error`` with the reason, so it is not ``pending`` for good, and raise one alert.
    ``verify-recording`` starts a new round once the cause is fixed."""
    reason = f"verification failed: {type(error).__name__}: {error}"[:500]
    with store.session() as session:
        row = _locked(session, conversation_id)
        if row is None or (round_ is not None and row.verification_round != round_):
            return Outcome("stale")
        if row.verification_status in state.FINAL:
            return Outcome(row.verification_status)
        row.verification_status = state.ERROR
        row.verification_reason = reason
        row.verification_checked_at = datetime.now(UTC)
        row.verification_next_at = None
        alert = pipeline_failure(
            "storage", conversation_id, reason, conversation_id=conversation_id, attempts=attempts
        )
        row.verification_alert = dict(alert)
        current_round = row.verification_round
    _send_alert(store, conversation_id, current_round, dict(alert), send)
    return Outcome(state.ERROR)


def _claim(
    store: Store, conversation_id: str, round_: int | None, send: SendTask
) -> Claim | Outcome:
    now = datetime.now(UTC)
    with store.session() as session:
        row = _locked(session, conversation_id)
        if row is None or (round_ is not None and row.verification_round != round_):
            return Outcome("stale")
        if row.verification_status in state.FINAL:
            # A redelivery: nothing to check again; an alert not yet sent goes out now.
            outcome, pending = Outcome(row.verification_status), row.verification_alert
        else:
            row.verification_attempts = (row.verification_attempts or 0) + 1
            row.verification_started_at = row.verification_started_at or now
            row.verification_status = state.PENDING
            return Claim(
                conversation_id=conversation_id,
                round=row.verification_round,
                attempt=row.verification_attempts,
                started_at=row.verification_started_at,
                ready_at=row.ready_at,
                event_id=row.ready_event_id,
                provider=row.provider,
                uri=row.uri,
            )
    if pending:
        _send_alert(store, conversation_id, row.verification_round, pending, send)
    return outcome


def _record(
    store: Store, settings: Settings, claim: Claim, finding: Finding, send: SendTask
) -> Outcome:
    status, reason, retry_in = finding.status, finding.reason, None
    now = datetime.now(UTC)
    if status in (state.MISSING, TRANSIENT):
        cap = retry.cap_seconds(settings.visibility_timeout_seconds)
        delay = retry.delay(claim.attempt, cap, base=settings.storage_retry_base_seconds)
        waited = (now - claim.started_at).total_seconds()
        if waited + delay <= settings.recording_wait_seconds:
            status, retry_in = state.PENDING, delay
        else:
            status = state.MISSING if status == state.MISSING else state.ERROR
            window = settings.recording_wait_seconds
            reason = f"{reason}; gave up when the {window} s wait window closed"
    with store.session() as session:
        row = _locked(session, claim.conversation_id)
        if row is None or row.verification_round != claim.round:
            return Outcome("stale")  # a newer recording_ready started over meanwhile
        if row.verification_status in state.FINAL:
            return Outcome(row.verification_status)  # a concurrent delivery finished first
        row.verification_status = status
        row.verification_reason = reason
        row.verification_checked_at = now
        row.verification_next_at = now + timedelta(seconds=retry_in) if retry_in else None
        row.verification_call_seconds = (
            None if finding.call_seconds is None else round(finding.call_seconds, 3)
        )
        state.record_facts(row, finding.facts)
        if status in state.ALERTING:
            message = unverified.alert(_subject(claim, finding), status, reason or status, now)
            row.verification_alert = dict(message)
        pending = row.verification_alert
    log.info(
        "recording of %s, attempt %d: %s%s%s",
        claim.conversation_id,
        claim.attempt,
        status,
        f" ({reason})" if reason else "",
        f", next in {retry_in:.1f} s" if retry_in else "",
    )
    if pending:
        _send_alert(store, claim.conversation_id, claim.round, pending, send)
    return Outcome(status, retry_in)


def _subject(claim: Claim, finding: Finding) -> unverified.Subject:
    return unverified.Subject(
        conversation_id=claim.conversation_id,
        provider=claim.provider or (finding.where.provider if finding.where else None),
        uri=finding.where.uri if finding.where else redact(claim.uri),
        allow_entry=finding.where.allow_entry if finding.where else None,
        ready_at=claim.ready_at,
        event_id=claim.event_id,
        attempts=claim.attempt,
        started_at=claim.started_at,
    )


def _send_alert(
    store: Store, conversation_id: str, round_: int, alert: dict[str, Any], send: SendTask
) -> None:
    """Send the outbox alert, then clear it; a crash in between sends it again, never loses it."""
    send(RAISE_ALERT, [alert])
    with store.session() as session:
        row = _locked(session, conversation_id)
        if row is not None and row.verification_round == round_:
            row.verification_alert = None


def _locked(session: Session, conversation_id: str) -> Recording | None:
    query = select(Recording).where(Recording.conversation_id == conversation_id)
    return session.execute(
        query.with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _since(started: float) -> float:
    return time.monotonic() - started
