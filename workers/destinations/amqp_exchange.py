"""Forwarding to RabbitMQ (or any AMQP 0-9-1 broker): ``FORWARD_<NAME>_URL=amqp://user:password@
host:5672/vhost?exchange=<name>`` (``amqps://`` for TLS; the exchange defaults to ``tavus``).

Each event is one persistent message (delivery mode 2) published, with publisher confirms, to a
durable **topic** exchange that the worker declares when it starts, so that a consumer can bind
its queue before the first event. The routing key is the event type (``application.
transcription_ready``), or the kind for kinds without one (``replica``); so ``application.#``
binds every application event. Headers ``tavus-event-kind``, ``tavus-event-type``,
``tavus-event-source`` and ``tavus-event-id`` (and, with tracing on, ``traceparent``: the
consumer's spans continue the callback's trace); the message id is our event id too (the same on
every retry: the consumer's idempotency key); the body is the bytes Tavus sent.

A broker that is down, slow or that nacks is retried; refused credentials, a missing vhost or an
exchange that exists with another type fail at once. Unroutable messages (no queue bound) are
dropped by the broker, as AMQP says: bind before events flow. The client is py-amqp, which Celery
already brings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import amqp
from amqp import exceptions as amqp_errors

from schemas import tracing
from schemas.settings import DestinationSettings, ForwardDestination, Settings
from workers.errors import Permanent, Transient

from .base import Answer, ForwardedEvent, UrlDestination

DEFAULT_EXCHANGE = "tavus"
PERSISTENT = 2  # AMQP delivery mode: written to disk by the broker

# What the broker refuses for good: credentials, a vhost, an exchange of another type.
_REFUSED = (
    amqp_errors.AccessRefused,
    amqp_errors.NotAllowed,
    amqp_errors.NotFound,
    amqp_errors.PreconditionFailed,
)
_UNAVAILABLE = (
    OSError,  # refused, reset, timed out (socket.timeout), TLS failures
    amqp_errors.RecoverableConnectionError,
    amqp_errors.RecoverableChannelError,
    amqp_errors.MessageNacked,
)


class AmqpDestination(UrlDestination):
    settings = DestinationSettings(
        "amqp",
        ("amqp", "amqps"),
        about="`amqp://user:password@host:5672/vhost[?exchange=<name>]`: a persistent message "
        "per event to a durable topic exchange (default `tavus`, declared at worker start), "
        "routing key the event type or the kind; `amqps://` for TLS. No variables of its own.",
    )

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        self.exchange = self.query(config, ("exchange",)).get("exchange", DEFAULT_EXCHANGE)
        if not self.exchange:
            raise self.refuse(config, "?exchange= names no exchange (leave it out for tavus)")
        parts = config.parts
        try:
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError:
            raise self.refuse(config, "the port is not a number from 0 to 65535") from None
        self._connect = {
            "host": f"{parts.hostname}:{port}",
            "userid": unquote(parts.username or "guest"),
            "password": unquote(parts.password or "guest"),
            "virtual_host": unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
            "ssl": parts.scheme == "amqps",
            "connect_timeout": self._timeout,
            "read_timeout": self._timeout,
            "write_timeout": self._timeout,
        }
        self._key = (config.url, self._timeout)

    def prepare(self) -> None:
        """Declare the exchange at worker start, on a connection closed before the fork."""
        self._attempt(lambda channel: None)
        _drop(self._key)

    def deliver(self, event: ForwardedEvent) -> Answer:
        message = amqp.Message(
            event.raw.encode("utf-8"),
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=event.id,
            application_headers=tracing.inject(
                {
                    "tavus-event-kind": event.kind or "",
                    "tavus-event-type": event.event_type or "",
                    "tavus-event-source": event.source,
                    "tavus-event-id": event.id,
                }
            ),
        )
        routing_key = event.event_type or event.kind or "unclassified"
        self._attempt(
            lambda channel: channel.basic_publish_confirm(
                message, self.exchange, routing_key, confirm_timeout=self._timeout
            )
        )
        return Answer(excerpt=f"confirmed by {self.host}, routing key {routing_key}")

    def _attempt(self, publish: Callable[[amqp.Channel], Any]) -> None:
        try:
            publish(self._channel())
        except _REFUSED as exc:
            _drop(self._key)
            raise Permanent(f"{self.host} refused: {type(exc).__name__}") from None
        except _UNAVAILABLE as exc:
            _drop(self._key)
            raise Transient(f"{self.host} unavailable: {type(exc).__name__}") from None

    def _channel(self) -> amqp.Channel:
        """This process's channel to the broker, in confirm mode, the exchange declared."""
        found = _CHANNELS.get(self._key)
        if found is not None and found[0] == os.getpid() and found[1].connected:
            return found[2]
        connection = amqp.Connection(**self._connect)
        connection.connect()
        channel = connection.channel()
        channel.confirm_select()  # the broker acks each message once it has it
        channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
        _CHANNELS[self._key] = (os.getpid(), connection, channel)
        return channel


# One connection per process and destination, not one per event; a forked child (the pool)
# opens its own rather than share its parent's socket.
_CHANNELS: dict[tuple[str, float], tuple[int, amqp.Connection, amqp.Channel]] = {}


def _drop(key: tuple[str, float]) -> None:
    """Forget a connection after a failure (or the start), closing it if it still answers."""
    found = _CHANNELS.pop(key, None)
    if found is None or found[0] != os.getpid():
        return
    # Already broken, maybe: what matters is that the next attempt opens a new one.
    with contextlib.suppress(OSError, amqp_errors.AMQPError):
        found[1].close()
