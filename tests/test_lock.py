"""The locks in requirements/ satisfy pyproject.toml: every requirement (extras included) is
pinned there at a version its range allows. A range changed without `./scripts/lock` fails here,
before a fresh machine installs something CI never tested."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)")


def pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of every package a lock file pins."""
    found = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def requirements(extras: set[str]) -> list[Requirement]:
    """pyproject's runtime requirements, those of ``extras`` (following self-references such as
    ``tavus-callbacks[bench]``), and what builds the project (requirements/build.in)."""
    build_in = (ROOT / "requirements" / "build.in").read_text().splitlines()
    lines = [*PROJECT["dependencies"], *(line for line in build_in if line.strip())]
    todo, seen, found = set(extras), set(), []
    while todo:
        extra = todo.pop()
        seen.add(extra)
        lines += PROJECT["optional-dependencies"][extra]
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == canonicalize_name(PROJECT["name"]):
            for extra in requirement.extras - seen:  # an extra that includes another
                seen.add(extra)
                lines += PROJECT["optional-dependencies"][extra]
        elif requirement.marker is None or requirement.marker.evaluate():
            found.append(requirement)
    return found


ALL_EXTRAS = set(PROJECT["optional-dependencies"])


@pytest.mark.parametrize(
    ("lock", "extras"), [("run.txt", set()), ("test.txt", ALL_EXTRAS)], ids=["run", "test"]
)
def test_lock_pins_every_requirement_within_its_range(lock: str, extras: set[str]) -> None:
    pinned = pins(ROOT / "requirements" / lock)
    wanted = requirements(extras)
    assert wanted, "no requirements read from pyproject.toml"
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in pinned]
    outside = [
        f"{r} (locked {pinned[canonicalize_name(r.name)]})"
        for r in wanted
        if canonicalize_name(r.name) in pinned
        and not r.specifier.contains(pinned[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not missing, f"not in requirements/{lock}, run ./scripts/lock: {missing}"
    assert not outside, (
        f"requirements/{lock} is outside pyproject's range, run ./scripts/lock: {outside}"
    )


def test_run_lock_has_the_test_locks_versions() -> None:
    """What runs is what CI tested: every package of the run lock, at the test lock's version."""
    run, test = pins(ROOT / "requirements" / "run.txt"), pins(ROOT / "requirements" / "test.txt")
    differ = {
        name: (version, test.get(name))
        for name, version in run.items()
        if test.get(name) != version
    }
    assert not differ, f"run.txt and test.txt disagree, run ./scripts/lock: {differ}"
