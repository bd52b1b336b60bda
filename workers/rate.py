"""``FORWARD_<NAME>_RATE``: at most N deliveries per period to one destination, across every
worker process on every host, counted in Redis (``REDIS_URL``, the broker every worker shares).

The limit is a GCRA (the generic cell rate algorithm) without burst: one delivery per
``period / count``, on Redis's clock (``TIME``), so that the hosts' clocks do not matter. A
delivery that finds its slot taken is told how long to wait; it takes no attempt, and runs again
then (with a little jitter, so that the waiting ones do not all wake at once).
"""

from __future__ import annotations

import math
import random
from functools import cache

from redis.commands.core import Script

from schemas.broker import redis_client
from schemas.settings import Settings

KEY = "tavus:forward:rate:{}"  # + the destination's name

# Returns 0 and takes the slot when it is free, else the milliseconds until it is.
_TAKE_SLOT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local next_free = tonumber(redis.call('GET', KEYS[1]) or '0')
if next_free > now then
    return next_free - now
end
redis.call('SET', KEYS[1], now + interval, 'PX', interval + 1000)
return 0
"""


def wait_seconds(settings: Settings, destination: str, rate: tuple[int, float]) -> float:
    """0 when a delivery to ``destination`` may go now (its slot is taken), else how long to
    wait. Redis unreachable raises a ``redis.RedisError``: the task's retry policy handles it."""
    count, period = rate
    interval_ms = max(1, math.ceil(period * 1000 / count))
    waiting_ms = _script(settings)(keys=[KEY.format(destination)], args=[interval_ms])
    if not waiting_ms:
        return 0.0
    return waiting_ms / 1000 + random.uniform(0, interval_ms / 1000)


@cache
def _script(settings: Settings) -> Script:
    """One client and script per process (redis-py starts a new pool in a forked child)."""
    return redis_client(settings).register_script(_TAKE_SLOT)
