"""A fault, loaded into a real worker with TAVUS_EXTENSIONS: the broker connection drops just as
the worker queues an event's first forward, after the event committed (as when Redis is killed
at that moment). Once per BROKER_DROP_MARKER, a file the first drop creates."""

from __future__ import annotations

import os
from typing import Any

import redis

from workers.tasks import events

_send_task = events.send_task


def _dropping(name: str, args: list[Any]) -> None:
    if name.startswith(("tavus.forward", "tavus.hooks")):
        try:
            os.close(os.open(os.environ["BROKER_DROP_MARKER"], os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            raise redis.ConnectionError("Connection closed by server.")
    _send_task(name, args)


events.send_task = _dropping
