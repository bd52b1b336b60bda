"""The layout shows the architecture: each package imports only what docs/architecture.md allows.

Read from the source (every import statement, module level or not), so a lazy import inside a
function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import ROOT

OURS = {"schemas", "receiver", "workers", "console", "cli", "bench", "tests", "deploy"}
CLOUD_SDKS = {"boto3", "botocore", "google", "azure"}
# What each runtime package may import of ours, beside itself. The console reads through the
# store and the queries; its write actions (replay, redeliver, erase, each audited) reuse the
# workers' own functions rather than a copy of them.
ALLOWED = {
    "schemas": (),
    "receiver": ("schemas",),
    "workers": ("schemas",),
    "console": (
        "schemas",
        "workers.store",
        "workers.queries",
        "workers.replay",
        "workers.forwarding",
        "workers.lifecycle",
        "workers.audit",
    ),
    "deploy": ("schemas", "receiver", "console"),
}


def imports_of(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "workers":  # `from workers import queries` names the module
                yield from (f"workers.{alias.name}" for alias in node.names)
            else:
                yield node.module


def refused(package: str) -> list[str]:
    allowed = ALLOWED[package]
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports_of(path):
            top = name.split(".")[0]
            ours = top in OURS and top != package
            if ours and not any(name == a or name.startswith(f"{a}.") for a in allowed):
                found.append(f"{path.relative_to(ROOT)}: {name}")
            if package == "receiver" and top in CLOUD_SDKS | {"sqlalchemy", "psycopg"}:
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_runtime_package_imports_only_what_the_layout_allows(package: str) -> None:
    assert refused(package) == []


def test_no_test_module_imports_from_another_or_from_conftest() -> None:
    found = [
        f"{path.name}: {name}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for name in imports_of(path)
        if name == "tests.conftest" or name.startswith("tests.test_")
    ]
    assert found == []
