"""How the CLI shows things to a person: one table renderer, one way to print a record, and text
from payloads made safe for a terminal.

Other commands use these too (``from cli.render import echo_table, print_record``), so every
listing reads the same: a header row, aligned columns, ``-`` for nothing, ``key=value`` for
variables, and no control character from a callback ever reaching the terminal.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

NOTHING = "-"


def safe(text: str) -> str:
    """``text`` with every non-printable character (ESC, CR, backspace, bidi overrides...) shown
    as its escape, ``\\x1b``, so a transcript cannot move the cursor, recolour or retitle the
    terminal. Printable text, accents and emoji included, is left as it is."""
    return "".join(
        char if char.isprintable() and unicodedata.category(char) != "Cf" else _escaped(char)
        for char in text
    )


def _escaped(char: str) -> str:
    return repr(char)[1:-1] if char not in "'\"" else char


def cell(value: Any) -> str:
    """One value as a person reads it: ``-`` for nothing, ``key=value`` pairs for a mapping,
    commas for a list, times to the second, everything else as text, neutralised."""
    if value is None or value == "" or value == [] or value == {}:
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{safe(str(key))}={cell(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(cell(item) for item in value)
    return safe(str(value))


def when(iso: str | None) -> str:
    """An ISO timestamp to the second, as ``2025-07-11 06:50:02``."""
    return iso[:19].replace("T", " ") if iso else NOTHING


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 attempt``, ``3 attempts`` (``plural`` where an ``s`` will not do: entries)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A header row and aligned columns, two spaces apart; every value goes through ``cell``."""
    body = [[cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = [[str(h).upper() for h in headers], *body]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def echo_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "nothing"
) -> None:
    """Print a table, or ``empty`` when there are no rows."""
    rows = list(rows)
    click.echo(table(headers, rows) if rows else empty)


def print_record(record: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """``record`` as JSON (for scripts: exact values, nothing neutralised but JSON's own
    escaping) or as ``render`` draws it for a person."""
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str, ensure_ascii=True))
    else:
        click.echo(render(record))


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``label: value`` lines, the labels aligned, values through ``cell``."""
    pairs = list(pairs)
    width = max((len(label) for label, _ in pairs), default=0) + 1
    return "\n".join(f"{(label + ':').ljust(width)}  {cell(value)}" for label, value in pairs)
