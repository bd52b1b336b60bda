"""A toy storage provider: recordings as files in folders under TOY_STORAGE_ROOT.

``file://<folder>/<path>`` names one, ``folder:<folder>`` lists a folder in RECORDING_LOCATIONS.
The recipe's one module (docs/architecture.md, "A storage provider"); its one line is the
``register`` decorator. A real provider's settings are declared in schemas/settings.py; this
toy reads TOY_STORAGE_ROOT when the worker builds it, to stay out of the project's settings.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from schemas.settings import Settings
from workers.storage.base import ObjectFacts
from workers.storage.errors import Missing, StorageRefused
from workers.storage.locations import LocationRefused, ObjectLocation, bucket_and_key, plain_entry
from workers.storage.verifiers import register


@register
class FolderVerifier:
    provider = "folder"
    schemes = ("file",)
    entry = staticmethod(plain_entry)

    def __init__(self, root: Path) -> None:
        self._root = root

    @classmethod
    def parse(cls, uri: str, settings: Settings) -> ObjectLocation:
        folder, path = bucket_and_key(uri)
        if not folder.isalnum() or any(part in ("", ".", "..") for part in path.split("/")):
            raise LocationRefused("not a file://<folder>/<path> inside its folder")
        return ObjectLocation(cls.provider, folder, path, uri=f"file://{folder}/{path}")

    @classmethod
    def from_settings(cls, settings: Settings) -> FolderVerifier:
        return cls(Path(os.environ["TOY_STORAGE_ROOT"]))

    def stat(self, where: ObjectLocation) -> ObjectFacts:
        try:
            found = (self._root / where.container / where.key).stat()
        except FileNotFoundError:
            raise Missing("no such file") from None
        except OSError as exc:
            raise StorageRefused(f"cannot read the file: {exc.strerror}") from exc
        modified = datetime.fromtimestamp(found.st_mtime, UTC)
        return ObjectFacts(size=found.st_size, last_modified=modified)
