"""TAVUS_EXTENSIONS: the user's own modules that add a callback kind, a storage provider or an
alert channel (docs/architecture.md, "Recipes"), imported by every process when it starts.

A module registers what it adds when it is imported, with the same one line a built-in one has
in its package (``schemas.callbacks.register``, ``workers.storage.verifiers.register``,
``workers.alerts.notifiers.register``). The receiver imports the list too, so a callback kind's
module must import only ``schemas``: its handler is named by module path in its ``Kind`` and
imported by the workers alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from .settings import SettingsError


class ExtensionError(SettingsError):
    """A module named in TAVUS_EXTENSIONS cannot be imported: the process must not start."""


def load(modules: Iterable[str]) -> None:
    """Import each module (registering what it adds); importing it again changes nothing."""
    import_modules(modules, "TAVUS_EXTENSIONS")


def import_modules(
    modules: Iterable[str], named_by: str, error: type[Exception] = ExtensionError
) -> None:
    """Import the user's modules that ``named_by`` names; the first that fails raises ``error``,
    one line saying which and why, so the process stops at start rather than on first use."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever the module raised, it is one clear line
            raise error(
                f"{named_by}: cannot import {module!r}: {type(exc).__name__}: {exc}"
            ) from exc
