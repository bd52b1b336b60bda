"""The spool's layout on disk: the receiver writes it, the metrics and the CLI read it.

One file per event, named ``<write time in ns>-<pid>-<random>.event`` so that names sort in
arrival order; anything else in the directory (temporaries, the lock, ``rejected/``) is not a
spooled event. Kept here, beside the queue message, because it is a contract between processes
that must not import one another (the console never imports the receiver).
"""

from __future__ import annotations

import os
from pathlib import Path

SUFFIX = ".event"


def spooled_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The spooled events in ``directory``, oldest first; none when it does not exist yet."""
    try:
        names = [e.name for e in os.scandir(directory) if e.name.endswith(SUFFIX)]
    except (FileNotFoundError, NotADirectoryError):  # nothing was ever spooled here
        return []
    return [Path(directory) / name for name in sorted(names)]


def written_at(path: Path) -> float:
    """When a spooled file was written, in epoch seconds, read from its name."""
    return int(path.name.split("-", 1)[0]) / 1e9
