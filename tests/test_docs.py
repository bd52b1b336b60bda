"""The docs site builds in strict mode (a broken link or anchor, a missing page, a page left out of
the nav or a missing BENCHMARKS.md all fail), and the README stays a front door into it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.services import ROOT

README_MAX_LINES = 150
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)#\s]+)(?:#[^)]*)?\)")


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    benchmarks = (tmp_path / "benchmarks" / "index.html").read_text()
    assert "Latest run" in benchmarks  # BENCHMARKS.md itself, included


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_relative_link_in_the_readme_names_a_file() -> None:
    links = RELATIVE_LINK.findall((ROOT / "README.md").read_text())
    assert links, "the README links into the docs"
    assert [link for link in links if not (ROOT / link).exists()] == []
