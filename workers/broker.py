"""The Redis transport the Celery app uses: kombu's own, with one shutdown race closed.

When Redis goes away (a restart, a failover) while a worker both waits on BRPOP and holds
messages it has not acked yet, kombu 5.7 fails to close the channel on its first try (the
outstanding BRPOP read raises), closes the transport, then tries again and crashes restoring the
unacked messages without a transport: the worker stops with "Unrecoverable error: AttributeError
('NoneType' object has no attribute 'hostname')" instead of reconnecting. Here the lost BRPOP
reply is given up and the close carries on at once. The unacked messages are handed back if
Redis answers, or stay in its ``unacked`` hash for the visibility-timeout sweep if it does not.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis


class Channel(redis.Channel):
    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the broker is gone, and with it the BRPOP reply: finish closing
        super().close()


class Transport(redis.Transport):
    Channel = Channel
