"""The Python hook ``tavus-callbacks soak`` configures (TAVUS_HOOKS=cli.soak_hook): it writes
each event id it runs for to SOAK_HOOK_LOG, one line per run, so the soak can count the runs."""

from __future__ import annotations

import os
from typing import Any

from workers.hooks import on


@on("*")
def record(event: Any) -> None:
    # One write of a short line to a file opened for appending: lines never interleave.
    with open(os.environ["SOAK_HOOK_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{event.id}\n")
