"""What a worker (and ``config check``) does at start with TAVUS_EXTENSIONS: import the modules,
then check that the settings name only kinds, providers and channels this process now has."""

from __future__ import annotations

from schemas import extensions
from schemas.settings import Settings


def load(settings: Settings) -> None:
    """Import the extensions and check the settings against them; SettingsError when wrong."""
    # The registries import every SDK and channel library: loaded here, at start, not by every
    # importer of the Celery app (the CLI).
    from workers.alerts import notifiers
    from workers.handlers import import_kind_handlers
    from workers.storage import verifiers

    extensions.load(settings.tavus_extensions)
    import_kind_handlers()
    notifiers.check(settings)
    verifiers.check(settings)
