"""The Redis transport the Celery app uses: kombu's own, with two races around a Redis that
goes away (a restart, a crash, a failover) closed. Both were met by tests/test_faults.py.

1. A message is taken with BRPOP, then recorded as unacked by a second command. When Redis
   dies in between, kombu drops the message it already holds: it was in no queue any more.
   Here the worker runs it anyway; the store keeps it once it ran.
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
from queue import Empty
from typing import Any

from kombu.transport import redis, virtual

log = logging.getLogger(__name__)


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:
            # This worker holds the only copy now: run it rather than lose it. If the worker
            # died too before storing it, it would be lost; that takes two faults at once.
            log.warning("Redis went away as message %s was taken; running it anyway", delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)


class Channel(redis.Channel):
    QoS = QoS

    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the broker is gone, and with it the BRPOP reply: finish closing
        super().close()


class Transport(redis.Transport):
    Channel = Channel
