"""The Redis transport the Celery app uses: kombu's own, with three races around a Redis that
goes away (a restart, a crash, a failover) closed. All were met by tests/test_faults.py.

1. kombu takes a message with BRPOP, then records it as unacked with a second command. Redis
   writes the pop to its append-only file before it answers, so when it dies in between the
   message is in no queue and in no ``unacked`` hash: gone, however durable Redis is. That
   happens when the reply is lost, too: a SIGTERM stops Redis right after the commands of its
   last turn ran and before their replies are written, a SIGKILL can land while it fsyncs (a
   worker busy taking messages loses one at nearly every restart). Here messages are taken and
   recorded as unacked by one Lua script, so each is always in its queue or in ``unacked``,
   where the visibility-timeout sweep finds it if the reply never arrives. One take pops as many
   messages as the consumer has free prefetch slots (at most ``TAKE_MAX``): over a network a
   worker pays one round trip for several of them. A script cannot block, so when every queue
   is empty the worker waits with ``BLMOVE q q RIGHT RIGHT``, which wakes when ``q`` gets a
   message and leaves it where it was (Redis 6.2+), then takes again. It waits on the first
   queue it consumes (``events`` in the Procfile); the others are looked at every
   ``IDLE_LOOK_SECONDS`` while the worker is idle.
2. A message got otherwise (``basic_get``, which Celery's worker does not use) is still taken
   and recorded in two steps. When Redis dies in between, the worker keeps it aside and pushes
   it back onto its queue as soon as Redis answers again, before it takes anything else: handing
   it to the consumer would lose it too, since Celery clears its reserved, not yet started
   requests when the connection is lost.
3. When the worker both waits for a message and holds unacked ones, kombu 5.7 fails to close
   the channel on its first try (the outstanding read raises), closes the transport, then
   tries again and crashes restoring the unacked messages without one: the worker stops with
   "Unrecoverable error: AttributeError('NoneType' object has no attribute 'hostname')" instead
   of reconnecting. Here the lost reply is given up and the close carries on at once. The
   unacked messages are handed back if Redis answers, or stay in its ``unacked`` hash for the
   visibility-timeout sweep if it does not.
"""

from __future__ import annotations

import logging
import threading
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis import sentinel

from schemas.broker import redis_client
from schemas.settings import Settings

log = logging.getLogger(__name__)

# While idle, how often a worker looks at the queues other than the one it waits on.
IDLE_LOOK_SECONDS = 0.1

# The most messages one take pops. A take fills the channel's free prefetch slots (Celery's
# worker: its pool processes not yet busy, prefetch multiplier 1), so over a network a worker
# pays one round trip for several messages instead of one each; the cap bounds the script's
# run on Redis and the messages a consumer without a prefetch limit holds at once.
TAKE_MAX = 16

# KEYS[1]: the unacked hash; KEYS[2]: its index (score: when taken); KEYS[3..]: the queues, in
# the order BRPOP would look at them. ARGV[1]: now; ARGV[2]: how many messages to take at most;
# ARGV[3..]: "1" for each queue whose consumer acks. Pops messages from the first non-empty
# queue, then the next ones, until it has ARGV[2]; records each, unless its consumer does not
# ack, as kombu's QoS.append would (the message's own bytes, then exchange and routing key), in
# the same step. Returns {queue, message, recorded, queue, message, recorded, ...} in the order
# taken, or nil when every queue is empty.
_TAKE = """
local taken, wanted = {}, tonumber(ARGV[2])
for i = 3, #KEYS do
  while #taken < wanted * 3 do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local recorded = 0
    local ok, message = pcall(cjson.decode, item)
    if ARGV[i] == '1' and ok and type(message) == 'table'
        and type(message.properties) == 'table' then
      local tag = message.properties.delivery_tag
      local info = message.properties.delivery_info
      if type(tag) == 'string' and type(info) == 'table' then
        local entry = '[' .. item .. ',' .. cjson.encode(info.exchange) .. ','
          .. cjson.encode(info.routing_key) .. ']'
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag, entry)
        recorded = 1
      end
    end
    taken[#taken + 1] = KEYS[i]
    taken[#taken + 1] = item
    taken[#taken + 1] = recorded
  end
end
return #taken > 0 and taken or false
"""

# Messages got by basic_get in the instant Redis went away, to push back once it answers:
# (payload, exchange, routing key). Process-wide, because the channel that took them is
# replaced by a new one when the connection comes back.
_taken_while_down: list[tuple[dict[str, Any], str, str]] = []
_taken_lock = threading.Lock()


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.recorded_delivery == delivery_tag:
            # Taken and recorded in one step (_TAKE): only this process's own books are left.
            virtual.QoS.append(self, message, delivery_tag)
            return
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            # This worker holds the only copy now: keep it aside for its queue, and let the
            # connection error through, so that the consumer never gets (and drops) it.
            delivery = message.delivery_info
            with _taken_lock:
                _taken_while_down.append(
                    (message._raw, delivery["exchange"], delivery["routing_key"])
                )
            log.warning(
                "Redis went away as message %s was taken; it goes back to %s on reconnection",
                delivery_tag,
                delivery["routing_key"],
            )
            raise


class Channel(redis.Channel):
    QoS = QoS

    # The delivery tag of the message being handed to the consumer that _TAKE recorded.
    recorded_delivery: str | None = None
    # The last take found every queue empty: wait for a message before taking again.
    _idle = False
    _waiting = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Queues consumed without acks: _TAKE must not record their messages as unacked, since
        # nothing would ever ack them (the sweep would deliver them again and again).
        self._no_ack_queues: set[str] = set()
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _brpop_start(self, timeout: Any = None) -> None:
        _push_back_taken(self)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        prefix = self.global_keyprefix or ""
        if self._idle:
            first = prefix + self.active_queues[0]
            command = ["BLMOVE", first, first, "RIGHT", "RIGHT", IDLE_LOOK_SECONDS]
        else:
            command = self._take_command(queues, prefix)
        self._waiting = self._idle
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _take_command(self, queues: list[str], prefix: str) -> list[Any]:
        """_TAKE on the keys BRPOP would look at, in its order (priorities first)."""
        pairs = [
            (prefix + self._q_for_pri(queue, pri), "0" if queue in self._no_ack_queues else "1")
            for pri in self.priority_steps
            for queue in queues
        ]
        keys = [prefix + self.unacked_key, prefix + self.unacked_index_key]
        keys += [key for key, _ in pairs]
        count = self._take_count()
        return ["EVAL", _TAKE, len(keys), *keys, time(), count, *(acks for _, acks in pairs)]

    def _take_count(self) -> int:
        """As many messages as the prefetch limit lets the consumer hold more of (kombu says
        None when there is no limit), from 1 to TAKE_MAX."""
        free = self.qos.can_consume_max_estimate()
        return max(1, min(TAKE_MAX, TAKE_MAX if free is None else free))

    def _brpop_read(self, **options: Any) -> bool:
        waited, self._waiting = self._waiting, False
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVAL", **options)
            except self.connection_errors:
                self._idle = False  # a new connection starts with a take
                # Disconnect so that the next iteration reconnects, as kombu does.
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        self._idle = not waited and not reply
        if waited or not reply:
            raise Empty()
        prefix = len(self.global_keyprefix or "")
        taken = []  # (key, queue, message, recorded), in the order taken
        for at in range(0, len(reply), 3):
            key = bytes_to_str(reply[at])[prefix:]
            taken.append((key, key.rsplit(self.sep, 1)[0], reply[at + 1], reply[at + 2]))
        # Each queue a message came from goes to the back of the cycle, in the order taken, so
        # that the next take starts with the others (as kombu does after each BRPOP).
        for queue in dict.fromkeys(queue for _, queue, _, _ in taken):
            self._queue_cycle.rotate(queue)
        for at, (_, queue, item, recorded) in enumerate(taken):
            payload = loads(bytes_to_str(item))
            self.recorded_delivery = payload["properties"]["delivery_tag"] if recorded else None
            try:
                self.connection._deliver(payload, queue)
            except BaseException:
                self._hand_back(taken[at + 1 :])
                raise
            finally:
                self.recorded_delivery = None
        return True

    def _hand_back(self, undelivered: list[tuple[str, str, bytes, int]]) -> None:
        """A delivery raised: the messages taken with it and not delivered yet go back to the
        head of their queue as they were, and out of ``unacked``, in one transaction, rather
        than wait for the visibility-timeout sweep. With Redis away, the recorded ones stay in
        ``unacked`` for the sweep (those of a consumer without acks are lost, as kombu's own)."""
        if not undelivered:
            return
        try:
            with self.client.pipeline() as pipe:
                for key, _, item, recorded in reversed(undelivered):  # the first one ends up first
                    pipe.rpush(key, item)
                    if recorded:
                        tag = loads(bytes_to_str(item))["properties"]["delivery_tag"]
                        pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag)
                pipe.execute()
        except self.connection_errors:
            log.warning("%d taken messages not handed back: Redis went away", len(undelivered))

    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the broker is gone, and with it the reply: finish closing
        super().close()


def _push_back_taken(channel: Channel) -> None:
    """Before waiting for the next message, put the ones taken while Redis was away back at the
    head of their queue (the next take finds them first). Still down: they wait for the next
    try; the connection error goes on to the consumer, which reconnects."""
    if not _taken_while_down:
        return
    with _taken_lock:
        while _taken_while_down:
            payload, exchange, routing_key = _taken_while_down[0]
            channel._do_restore_message(payload, exchange, routing_key, channel.client)
            _taken_while_down.pop(0)
            log.warning("message taken while Redis was away is back in %s", routing_key)


class Transport(redis.Transport):
    Channel = Channel


# kombu's pool options that our client factory takes as they are; host, port and db come from
# the sentinels and REDIS_URL instead.
_POOL_OPTIONS = (
    "connection_class",
    "max_connections",
    "socket_keepalive",
    "socket_keepalive_options",
    "health_check_interval",
    "retry_on_timeout",
    "client_name",
)


class SentinelChannel(Channel):
    """The channel above, on the primary the sentinels name (``REDIS_SENTINELS``): its pools
    come from ``schemas.broker.redis_client``, the one place a client is built, with kombu's
    connection classes (Sentinel-managed, so that every new connection asks the sentinels, and
    kombu's subclass that leaves the event loop on disconnect). After a failover the worker's
    connections fail, kombu reconnects, and the sentinels name the promoted replica; the take
    stays one script on whichever node is the primary."""

    from_transport_options = (*Channel.from_transport_options, "tavus_settings")
    connection_class = sentinel.SentinelManagedConnection
    connection_class_ssl = redis.SentinelManagedSSLConnection
    tavus_settings: Settings | None = None

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if self.tavus_settings is None:
            raise ValueError("the 'tavus_settings' transport option must be set")
        params = self._connparams(asynchronous=asynchronous)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        client = redis_client(
            self.tavus_settings,
            params["socket_timeout"],
            params["socket_connect_timeout"],
            **{key: params[key] for key in _POOL_OPTIONS if key in params},
        )
        pool = client.connection_pool
        # kombu closes the connections to the sentinels themselves with the pools.
        if asynchronous:
            self._async_sentinel_manager = pool.sentinel_manager
        else:
            self._sentinel_manager = pool.sentinel_manager
        return pool


class SentinelTransport(Transport):
    Channel = SentinelChannel
