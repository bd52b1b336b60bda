"""Forwarding to a Redis stream: ``FORWARD_<NAME>_URL=redis://[:password@]host:port/db?stream=
<name>[&maxlen=<n>]`` (``rediss://`` for TLS, verified as ``REDIS_TLS_VERIFY`` says).

Each event is one ``XADD`` with an approximate ``MAXLEN`` (``~``: Redis trims whole nodes, so
the stream keeps at least ``maxlen`` entries, cheaply), fields ``id`` (our event id, the same on
every retry: the consumer's idempotency key), ``kind``, ``type``, ``source`` and ``body`` (the
bytes Tavus sent), and ``traceparent`` with tracing on. The stream's entry id is kept as the
attempt's answer.

A refused connection, a timeout, a replica that is read-only during a failover or a Redis out of
memory is retried; a wrong password or a key of another type fails at once.
"""

from __future__ import annotations

from urllib.parse import urlunsplit

import redis

from schemas import tracing
from schemas.broker import redis_client
from schemas.settings import DestinationSettings, ForwardDestination, Settings
from workers.errors import Permanent, Transient

from .base import Answer, ForwardedEvent, UrlDestination

DEFAULT_MAXLEN = 100_000


class RedisStreamDestination(UrlDestination):
    settings = DestinationSettings(
        "redis_stream",
        ("redis", "rediss"),
        about="`redis://[:password@]host:port/db?stream=<name>[&maxlen=<n>]`: an `XADD` per event "
        "to the stream, trimmed to about `maxlen` entries (default 100000); `rediss://` verifies "
        "as `REDIS_TLS_VERIFY` says. No variables of its own.",
    )

    def configure(self, config: ForwardDestination, settings: Settings) -> None:
        options = self.query(config, ("stream", "maxlen"))
        self.stream = options.get("stream", "")
        if not self.stream:
            raise self.refuse(config, "name the stream: ?stream=<name>")
        self.maxlen = _positive(options.get("maxlen", str(DEFAULT_MAXLEN)))
        if self.maxlen is None:
            raise self.refuse(config, "maxlen must be a whole number above 0")
        parts = config.parts  # redis-py would take our options for its own
        self._client = _client(settings, urlunsplit(parts._replace(query="")), self._timeout)

    def deliver(self, event: ForwardedEvent) -> Answer:
        fields = {
            "id": event.id,
            "kind": event.kind or "",
            "type": event.event_type or "",
            "source": event.source,
            "body": event.raw,
        }
        tracing.inject(fields)  # the delivery's span, as a `traceparent` field
        try:
            entry = self._client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        except redis.AuthenticationError:
            raise Permanent(f"{self.host} refused the credentials") from None
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            raise Transient(f"{self.host} unavailable: {type(exc).__name__}") from None
        except redis.ResponseError as exc:  # Redis's own words: they name no credential
            if str(exc).startswith(("OOM", "BUSY", "LOADING", "TRYAGAIN")):
                raise Transient(f"{self.host} answered {str(exc)[:200]}") from None
            raise Permanent(f"{self.host} refused XADD: {str(exc)[:200]}") from None
        return Answer(excerpt=entry.decode() if isinstance(entry, bytes) else str(entry))


_CLIENTS: dict[tuple[str, float], redis.Redis] = {}


def _client(settings: Settings, url: str, timeout: float) -> redis.Redis:
    """One client (and connection pool) per process and URL, not one per delivery: redis-py
    starts a new pool in a forked child, so one made before the fork is safe."""
    key = (url, timeout)
    if key not in _CLIENTS:
        _CLIENTS[key] = redis_client(settings, timeout=timeout, connect_timeout=timeout, url=url)
    return _CLIENTS[key]


def _positive(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None
