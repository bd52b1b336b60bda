"""Forwarding to Amazon SQS: ``FORWARD_<NAME>_URL=sqs://<queue-name>?region=<region>`` (the
queue looked up by name, at ``AWS_ENDPOINT_URL_SQS`` when set), or the queue's own URL behind
``sqs+``: ``sqs+https://sqs.<region>.amazonaws.com/<account>/<queue-name>`` (a bare ``https://``
is a webhook). Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID``..., a role).

Each event is one message: the body Tavus sent, with string attributes ``kind``, ``type``,
``source`` and ``event_id`` (those with a value: SQS refuses empty ones), and ``traceparent``
with tracing on (docs/tracing.md). A FIFO queue
(``.fifo``) gets ``MessageGroupId`` = the conversation id (the kind, for events of no
conversation), so a conversation's events are read in order, and ``MessageDeduplicationId`` =
our event id, so that SQS itself drops a second send within its five-minute window. A standard
queue has no such window: ``event_id`` is the consumer's idempotency key.

Throttling, 5xx, a timeout or a refused connection are retried; denied, no such queue or a
message SQS refuses (over 256 KiB) fail at once.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from schemas import tracing
from schemas.settings import DestinationSettings, ForwardDestination, Settings
from workers.aws import NO_CREDENTIALS, UNREACHABLE, aws_answer, worth_retrying
from workers.errors import Permanent, Transient

from .base import Answer, ForwardedEvent, UrlDestination


class SqsDestination(UrlDestination):
    settings = DestinationSettings(
        "sqs",
        ("sqs", "sqs+https", "sqs+http"),
        about="`sqs://<queue-name>?region=<region>` or `sqs+https://<the queue's URL>`: one "
        "message per event, attributes `kind`, `type`, `source`, `event_id`; a `.fifo` queue gets "
        "the conversation as its group and the event id as its deduplication id. No variables of "
        "its own.",
    )

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        parts = config.parts
        region = self.query(config, ("region",)).get("region")
        self._endpoint: str | None = None
        if config.scheme == "sqs":
            self.queue_name, self._queue_url = parts.netloc, None
            if not self.queue_name or "/" in parts.path.strip("/"):
                raise self.refuse(config, "name the queue: sqs://<queue-name>?region=<region>")
        else:  # the queue's URL: its endpoint, and on AWS its region, are in it
            self.queue_name = parts.path.rstrip("/").rsplit("/", 1)[-1]
            if not self.queue_name or not parts.hostname:
                raise self.refuse(config, "not a queue URL: sqs+https://<host>/<account>/<name>")
            scheme = config.scheme.removeprefix("sqs+")
            self._endpoint = f"{scheme}://{parts.netloc}"
            self._queue_url = f"{self._endpoint}{parts.path}"
            region = region or _aws_region(parts.hostname)
        self.fifo = self.queue_name.endswith(".fifo")
        self._region = region

    def deliver(self, event: ForwardedEvent) -> Answer:
        message: dict[str, Any] = {
            "MessageBody": event.raw,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in (
                    ("kind", event.kind),
                    ("type", event.event_type),
                    ("source", event.source),
                    ("event_id", event.id),
                    *tracing.inject({}).items(),  # the delivery's span: `traceparent`
                )
                if value
            },
        }
        if self.fifo:
            message["MessageGroupId"] = event.conversation_id or event.kind or "tavus"
            message["MessageDeduplicationId"] = event.id
        try:
            sent = self._sqs().send_message(QueueUrl=self._queue(), **message)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(exc) from None
        return Answer(excerpt=f"SQS message {sent.get('MessageId')}")

    def _sqs(self) -> Any:
        return _client(self._region, self._endpoint, self._timeout)

    def _queue(self) -> str:
        return self._queue_url or _queue_url(self._sqs(), self.queue_name)

    def _failure(self, exc: Exception) -> Exception:
        where = f"SQS queue {self.queue_name}"
        if isinstance(exc, ClientError):
            status, code = aws_answer(exc)
            said = f"{where}: {status} {code}".rstrip()
            return Transient(said) if worth_retrying(status, code) else Permanent(said)
        if isinstance(exc, UNREACHABLE):
            return Transient(f"{where} unreachable: {type(exc).__name__}")
        return Permanent(f"{where}: {_unusable_why(exc)}")


def _unusable_why(exc: Exception) -> str:
    """Why no request could be signed or sent; no retry helps until the configuration does."""
    if isinstance(exc, NO_CREDENTIALS):
        return "no AWS credentials"
    if isinstance(exc, NoRegionError):
        return "no AWS region (add ?region= or set AWS_DEFAULT_REGION)"
    return type(exc).__name__


@cache
def _client(region: str | None, endpoint: str | None, timeout: float) -> Any:
    """One client per process and place, made on first use: in a pool process, after the fork."""
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 1},  # the forward task retries, with backoff
    )
    return boto3.session.Session().client(
        "sqs", region_name=region, endpoint_url=endpoint, config=config
    )


@cache
def _queue_url(client: Any, name: str) -> str:
    """A queue named in ``sqs://<name>``, looked up once per process."""
    return client.get_queue_url(QueueName=name)["QueueUrl"]


def _aws_region(host: str) -> str | None:
    """``sqs.eu-west-1.amazonaws.com`` -> ``eu-west-1``; None elsewhere (boto3's default)."""
    labels = host.split(".")
    return labels[1] if len(labels) >= 4 and labels[0] == "sqs" else None
