"""A deadline for receiving a request body, so a slow client cannot hold a worker.

gunicorn's sync workers serve one request at a time and read the body only when the app asks,
with no timeout: a client that trickles its body a byte at a time would hold the worker until
gunicorn's own ``timeout`` kills it, and the kill answers 500. Instead, while the intake reads a
body, a watchdog thread (one per process) shuts the read side of any connection past its
deadline: the read ends at once and the intake answers 408 with a JSON body, on a socket that
can still be written. Per request this costs two dictionary operations under a lock.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

_TICK_SECONDS = 0.25


class Watch:
    __slots__ = ("deadline", "expired", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.expired = False


class ReadDeadlines:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._watched: dict[int, Watch] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextlib.contextmanager
    def watch(self, sock: socket.socket) -> Iterator[Watch]:
        """Within the block, reads from ``sock`` end (EOF) once the deadline has passed."""
        watch = Watch(sock, time.monotonic() + self.seconds)
        with self._lock:
            self._watched[id(watch)] = watch
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
        try:
            yield watch
        finally:
            # Removed under the lock before the socket can be closed: the watchdog never shuts
            # down a descriptor that a later connection reuses.
            with self._lock:
                self._watched.pop(id(watch), None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                for key, watch in list(self._watched.items()):
                    if watch.deadline <= now:
                        watch.expired = True
                        del self._watched[key]
                        with contextlib.suppress(OSError):
                            watch.sock.shutdown(socket.SHUT_RD)
