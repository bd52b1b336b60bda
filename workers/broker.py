"""The Redis transport the Celery app uses: kombu's own, with two races around a Redis that
goes away (a restart, a crash, a failover) closed. Both were met by tests/test_faults.py.

1. A message is taken with BRPOP, then recorded as unacked by a second command. When Redis
   dies in between, kombu drops the message it already holds: it was in no queue any more.
   Handing it to the consumer is no better: Celery clears its reserved, not yet started
   requests when the connection is lost, and the message is gone. Here the worker keeps it
   aside instead and pushes it back onto its queue as soon as Redis answers again, before it
   takes anything else; only this process dying before then (a second fault) would lose it.
2. When the worker both waits on BRPOP and holds unacked messages, kombu 5.7 fails to close the
   channel on its first try (the outstanding BRPOP read raises), closes the transport, then
   tries again and crashes restoring the unacked messages without one: the worker stops with
   "Unrecoverable error: AttributeError('NoneType' object has no attribute 'hostname')" instead
   of reconnecting. Here the lost BRPOP reply is given up and the close carries on at once. The
   unacked messages are handed back if Redis answers, or stay in its ``unacked`` hash for the
   visibility-timeout sweep if it does not.
"""

from __future__ import annotations

import logging
import threading
from queue import Empty
from typing import Any

from kombu.transport import redis

log = logging.getLogger(__name__)


# Messages taken in the instant Redis went away, to push back once it answers: (payload,
# exchange, routing key). Process-wide, because the channel that took them is replaced by a new
# one when the connection comes back.
_taken_while_down: list[tuple[dict[str, Any], str, str]] = []
_taken_lock = threading.Lock()


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
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

    def _brpop_start(self, timeout: Any = None) -> None:
        _push_back_taken(self)
        super()._brpop_start(timeout)

    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the broker is gone, and with it the BRPOP reply: finish closing
        super().close()


def _push_back_taken(channel: Channel) -> None:
    """Before waiting for the next message, put the ones taken while Redis was away back at the
    head of their queue (the next BRPOP takes them first). Still down: they wait for the next
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
