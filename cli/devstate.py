"""Where a running ``dev`` is, so that every terminal finds it.

``dev`` writes ``.tavus-callbacks/dev.json`` in the folder it runs in (its Redis, its store, its
spool, its callback URL, its pid) and removes it when it stops. Any other command, run in that
folder or any folder under it, looks upwards from where it runs for the nearest
``.tavus-callbacks`` folder and takes from it what the environment does not say: the state file
while its ``dev`` is alive, and in any case that folder's SQLite store, by absolute path. Two
``dev`` runs in two folders each have their own folder, so they never share anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

DATA_DIR_NAME = ".tavus-callbacks"
STATE_FILE_NAME = "dev.json"
STORE_FILE_NAME = "events.db"
# What a state file may fill in, by the environment variable it stands for.
STATE_VARIABLES = {
    "REDIS_URL": "redis_url",
    "DATABASE_URL": "database_url",
    "SPOOL_DIR": "spool_dir",
}


def data_dir(folder: Path) -> Path:
    """The folder ``dev`` keeps its files in when it runs in ``folder``, absolute."""
    return (folder / DATA_DIR_NAME).resolve()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / STORE_FILE_NAME}"


def nearest_data_dir(start: Path) -> Path | None:
    """The closest ``.tavus-callbacks`` folder at or above ``start``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / DATA_DIR_NAME
        if candidate.is_dir():
            return candidate
    return None


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state of the ``dev`` that runs from ``directory``; None if none is running (no file,
    a damaged one, or one left by a ``dev`` that was killed)."""
    try:
        state = json.loads((directory / STATE_FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(state.get("pid")):
        return None
    return state


def write_state(directory: Path, state: Mapping[str, Any]) -> Path:
    """Write the state atomically (a reader never sees half a file); readable by its owner only:
    the callback URL holds the token."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE_NAME
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(dict(state), indent=2) + "\n")
    scratch.chmod(0o600)
    scratch.replace(path)
    return path


def remove_state(directory: Path, pid: int) -> None:
    """Remove the state file if it is ``pid``'s (never another ``dev``'s)."""
    path = directory / STATE_FILE_NAME
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def apply(environ: MutableMapping[str, str], cwd: Path) -> Path | None:
    """Fill in ``environ`` from the nearest data folder above ``cwd``, leaving what it already
    says alone. Returns that folder (None: there is none).

    Without any data folder, the store defaults to one under ``cwd``, by absolute path, so the
    message about a missing store names a real place.
    """
    directory = nearest_data_dir(cwd)
    state = read_state(directory) if directory else None
    for variable, key in STATE_VARIABLES.items():
        if not environ.get(variable) and state and state.get(key):
            environ[variable] = str(state[key])
    if not environ.get("DATABASE_URL"):
        environ["DATABASE_URL"] = sqlite_url(directory or data_dir(cwd))
    if not environ.get("SPOOL_DIR") and directory:
        environ["SPOOL_DIR"] = str(directory / "spool")
    return directory


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
