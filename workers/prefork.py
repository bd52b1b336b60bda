"""The worker's process pool: Celery's prefork pool, with a cold shutdown that cannot hang on a
job half written to a pool process (docs/reliability.md).

The main process writes each job to a pool process's pipe from its event loop: a header, then
the body, in several turns of the loop when the job is bigger than the pipe. With
``REMAP_SIGTERM=SIGQUIT`` (the Procfile) Celery runs the cold shutdown inside the SIGTERM
handler, which may have interrupted such a write, and waits there for the pool to stop. The
write is never finished, the pool process waits for the rest of its job, the main process
waits for the pool process, until Heroku's SIGKILL 30 s later.

Here a cold shutdown waits for the pool only so long. Past that, the pool processes are
SIGKILLed and the pool is let go, and the shutdown carries on: the messages not acked go back
to Redis (``acks_late``), to be taken again by the next worker. A cold shutdown cancels running
tasks anyway; a warm shutdown waits for them, as Celery does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from celery.concurrency import prefork
from celery.worker import state

log = logging.getLogger(__name__)

# How long a cold shutdown waits for the pool to stop once its tasks are cancelled: they stop
# within a second when nothing is stuck.
POOL_STOP_SECONDS = 5.0


class TaskPool(prefork.TaskPool):
    def on_stop(self) -> None:
        if self._pool is None or not state.should_terminate:
            super().on_stop()
            return
        stopping = threading.Thread(target=super().on_stop, name="pool-stop", daemon=True)
        stopping.start()
        stopping.join(POOL_STOP_SECONDS)
        if stopping.is_alive():
            self._let_go()

    def _let_go(self) -> None:
        """SIGKILL every pool process and forget the pool: nothing may wait on it again."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        log.warning(
            "the pool did not stop within %.0fs of the cold shutdown (a job half written to "
            "a pool process); its processes are SIGKILLed, their messages go back to Redis",
            POOL_STOP_SECONDS,
        )
        for process in list(pool._pool):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(process.pid, signal.SIGKILL)
