"""A planning bug, for the fault suite: while the file named by ``TAVUS_TEST_PLANNING_BUG``
exists, planning a body that holds ``MARKER`` raises, as a schema or date bug would. Deleting
the file is the fix being deployed. Loaded into a real worker with ``celery worker --include``;
production code is untouched (this module patches it from outside)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workers import processing

MARKER = "TRIGGERS-THE-PLANNING-BUG"
_plan = processing.plan


def _plan_with_the_bug(body: str, kind: str | None, event_type: str | None, errors: Any) -> Any:
    flag = os.environ.get("TAVUS_TEST_PLANNING_BUG")
    if flag and Path(flag).exists() and MARKER in body:
        raise ValueError("injected planning bug: cannot read this body")
    return _plan(body, kind, event_type, errors)


processing.plan = _plan_with_the_bug
