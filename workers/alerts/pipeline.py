"""The alert a dead letter raises: one per stage and subject, so a person learns of it once."""

from __future__ import annotations

from schemas.messages import AlertMessage


def pipeline_failure(
    stage: str,
    subject: str,
    error: str,
    *,
    conversation_id: str | None = None,
    event_id: str | None = None,
    attempts: int | None = None,
) -> AlertMessage:
    """``pipeline_failure:<stage>:<subject>``: a task gave up, and what a person can do."""
    return AlertMessage(
        cause_key=f"pipeline_failure:{stage}:{subject}"[:512],
        severity="error",
        title=f"Pipeline failure at {stage}: {subject}",
        text=(
            f"The {stage} step of {subject} kept failing and was dead-lettered"
            f"{f' after {attempts} attempts' if attempts else ''}: {error}\n"
            "It is kept in the store. Fix the cause, then replay it "
            "(`tavus-callbacks replay`, or `verify-recording` for a recording)."
        ),
        conversation_id=conversation_id,
        event_id=event_id,
        facts={"stage": stage, "subject": subject, "error": error[:500], "attempts": attempts},
    )
