"""Redis as the broker, in one place: the client, publishing a task, the queues' depths.

Every process that talks to Redis builds its client with ``redis_client`` (the receiver, the
workers, the console, the CLI), so a new way to reach Redis (Sentinel, a cluster) is one change
here. Every task is published with ``TaskQueue``, as the lean message of
``schemas.messages.celery_envelope``: Celery's ``send_task`` rebuilds its whole message
machinery per call and costs more than the rest of a request together, and one format means a
reader of the queues (``console.metrics``) decodes one format. The receiver may import only
``schemas``, hence this module's place. With tracing on (``schemas.tracing``) each publish is a
PRODUCER span whose ``traceparent`` rides in the message's headers; off, nothing is added.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import redis
from redis.connection import parse_url
from redis.sentinel import Sentinel

from . import tracing
from .crypto import Cipher
from .messages import PROCESS_EVENT, QUEUES, EventMessage, celery_envelope, queue_for, sealed_args
from .settings import Settings

# kombu's Redis transport: a list per queue, one more per priority step ("<queue>\x06\x16<n>"),
# and one hash of the messages workers took and have not acked yet.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
UNACKED_KEY = "unacked"

# KEYS[1]: the claim key; KEYS[2]: the queue list.
# ARGV[1]: the claim's holder (the task id); ARGV[2]: the claim's TTL in seconds; ARGV[3]: the
# message. Returns the holder of an earlier claim, or nil once the message is queued: either
# both the claim and the push happen or neither, so a crash between them cannot leave a key
# claimed for a task that was never queued.
_CLAIM_AND_PUSH = """
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('LPUSH', KEYS[2], ARGV[3])
return false
"""


def redis_client(
    settings: Settings,
    timeout: float = 2.0,
    connect_timeout: float = 1.0,
    url: str | None = None,
    **connection: Any,
) -> redis.Redis:
    """A client (with its own pool) for ``REDIS_URL`` (or, with ``REDIS_SENTINELS``, for the
    primary the sentinels name), or for ``url`` (a forward destination's); short timeouts, so
    that a stalled Redis fails a request or a page rather than hanging it. Connects on first use.
    ``connection`` adds pool options (kombu's own connection class, its keepalive...)."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
    ours = url is None  # the service's own Redis; a destination's is never behind our sentinels
    url = url or settings.redis_url or ""
    if url.startswith("rediss://") and not settings.redis_tls_verify:
        # Heroku Redis presents a self-signed certificate (the Celery app: CERT_NONE too).
        options["ssl_cert_reqs"] = "none"
    options.update(connection)
    if ours and settings.redis_sentinels:
        return _sentinel_primary(settings, url, options)
    return redis.Redis.from_url(url, **options)


def _sentinel_primary(settings: Settings, url: str, options: dict[str, Any]) -> redis.Redis:
    """A client whose every new connection asks the sentinels where the primary is now: after
    a failover the old connections fail once, the next ones reach the promoted replica (and a
    connection to a demoted primary is dropped on its first READONLY answer)."""
    primary = parse_url(url) if url else {}
    for kept in ("username", "password", "db"):
        if primary.get(kept) is not None:
            options.setdefault(kept, primary[kept])
    if url.startswith("rediss://"):
        options["ssl"] = True
    sentinel_options = {
        key: options[key]
        for key in ("socket_timeout", "socket_connect_timeout", "ssl", "ssl_cert_reqs")
        if key in options
    }
    if settings.redis_sentinel_password:
        sentinel_options["password"] = settings.redis_sentinel_password
    nodes = [_host_port(node) for node in settings.redis_sentinels]
    sentinels = Sentinel(nodes, sentinel_kwargs=sentinel_options, **options)
    return sentinels.master_for(settings.redis_sentinel_master, redis.Redis)


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


class NotReplicated(redis.ConnectionError):
    """The primary took a write, but fewer replicas than ``REDIS_MIN_REPLICAS`` confirmed it in
    time: a failover now would lose it, so it must not be acknowledged as safe. A connection
    error, since it is the infrastructure's fault: a worker retries its task, the intake
    spools."""


class TaskQueue:
    """Publishes tasks by name to the queue ``TASK_ROUTES`` routes them to: one LPUSH each.

    With ``min_replicas``, each publish is followed, in the same round trip, by ``WAIT``: it
    returns only once that many replicas hold the write, or raises ``NotReplicated`` after
    ``replica_timeout_ms``. A Redis fault raises ``redis.RedisError``; the caller decides what
    then. With a ``cipher`` (``ENCRYPTION_KEYS``), what a task carries of content is sealed
    (``schemas.messages.sealed_args``).
    """

    def __init__(
        self,
        client: redis.Redis,
        min_replicas: int = 0,
        replica_timeout_ms: int = 100,
        cipher: Cipher | None = None,
    ) -> None:
        self._client = client
        self._cipher = cipher
        self._claim_and_push = client.register_script(_CLAIM_AND_PUSH)
        self._min_replicas = min_replicas
        self._replica_timeout_ms = replica_timeout_ms

    def send(self, task_name: str, args: list[Any], task_id: str | None = None) -> None:
        queue = queue_for(task_name)
        task_id = task_id or str(uuid.uuid4())
        args = sealed_args(task_name, args, self._cipher)
        with _sending(task_name, task_id, queue) as headers:
            envelope = celery_envelope(task_name, task_id, args, queue, headers)
            self._replicated(lambda pipe: pipe.lpush(queue, envelope))

    def publish_event(self, message: EventMessage) -> None:
        """Queue one event for processing (replay, reconciliation): its id is the task id."""
        self.send(PROCESS_EVENT, [message], task_id=message["event_id"])

    def send_once(
        self, task_name: str, args: list[Any], task_id: str, claim_key: str, ttl_seconds: int
    ) -> str | None:
        """Claim ``claim_key`` for ``task_id`` for ``ttl_seconds`` and queue the task, in one
        round trip, unless the key is claimed already: then nothing is queued and the holder's
        task id is returned (once replicated too: the claim is what a later resend relies on)."""
        queue = queue_for(task_name)
        args = sealed_args(task_name, args, self._cipher)
        with _sending(task_name, task_id, queue) as headers:
            envelope = celery_envelope(task_name, task_id, args, queue, headers)
            first = self._replicated(
                lambda pipe: self._claim_and_push(
                    keys=[claim_key, queue], args=[task_id, ttl_seconds, envelope], client=pipe
                )
            )
            if first is not None:
                tracing.annotate(**{"tavus.duplicate_of": first.decode()})
        return None if first is None else first.decode()

    def _replicated(self, write: Callable[[Any], Any]) -> Any:
        """Run ``write``; with ``min_replicas``, then ``WAIT`` in the same round trip."""
        if not self._min_replicas:
            return write(self._client)
        with self._client.pipeline(transaction=False) as pipe:
            write(pipe)
            pipe.wait(self._min_replicas, self._replica_timeout_ms)
            result, confirmed = pipe.execute()
        if confirmed < self._min_replicas:
            raise NotReplicated(
                f"{confirmed} of {self._min_replicas} replicas confirmed the write within "
                f"{self._replica_timeout_ms} ms"
            )
        return result


@contextmanager
def _traced_send(task_name: str, task_id: str, queue: str) -> Iterator[dict[str, str]]:
    """The producer span of one publish; yields the headers that carry it to the worker."""
    attributes = {
        "messaging.system": "celery",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
        "messaging.message.id": task_id,
    }
    with tracing.span(f"send {task_name}", "producer", attributes):
        yield dict(tracing.inject({}))


def _sending(task_name: str, task_id: str, queue: str) -> AbstractContextManager[Any]:
    """Tracing off: nothing (no headers added to the message); on: ``_traced_send``."""
    return _traced_send(task_name, task_id, queue) if tracing.on() else _NO_HEADERS


_NO_HEADERS: AbstractContextManager[None] = nullcontext()

_QUEUES: dict[tuple[int, str, tuple[str, ...]], TaskQueue] = {}


def task_queue_for(settings: Settings) -> TaskQueue:
    """The process's task queue, made on first use (after any fork: a connection must not cross
    one). Workers wait longer than a web request would, since a retry costs more than a wait."""
    key = (os.getpid(), settings.redis_url or "", settings.encryption_keys)
    if key not in _QUEUES:
        client = redis_client(settings, timeout=5.0, connect_timeout=2.0)
        _QUEUES[key] = task_queue(client, settings)
    return _QUEUES[key]


def task_queue(client: redis.Redis, settings: Settings) -> TaskQueue:
    """A task queue on ``client`` that waits for the replicas ``REDIS_MIN_REPLICAS`` asks."""
    return TaskQueue(
        client, settings.redis_min_replicas, settings.redis_replica_timeout_ms, settings.cipher
    )


def queue_depths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting per queue, plus ``unacked``: taken by a worker, not yet done."""
    with client.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            for suffix in PRIORITY_SUFFIXES:
                pipe.llen(name + suffix)
        pipe.hlen(UNACKED_KEY)
        *lengths, unacked = pipe.execute()
    step = len(PRIORITY_SUFFIXES)
    depths = {name: sum(lengths[i * step : (i + 1) * step]) for i, name in enumerate(QUEUES)}
    depths[UNACKED_KEY] = unacked
    return depths
