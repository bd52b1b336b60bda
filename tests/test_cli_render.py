"""What the CLI prints from a payload cannot drive the operator's terminal, and reads plainly."""

from __future__ import annotations

from cli.render import cell, count, safe, table

HOSTILE = "hi\x1b]0;pwned\x07\x1b[2J\r\x08\u202eevil"


def test_escapes_and_control_characters_are_shown_not_obeyed() -> None:
    shown = safe(HOSTILE)
    assert not any(ord(char) < 32 or char in "\x7f\u202e" for char in shown)
    assert "\\x1b]0;pwned\\x07" in shown and "\\u202e" in shown and shown.startswith("hi")
    assert safe("Grüße, 你好 👋") == "Grüße, 你好 👋"  # printable text is left alone


def test_cells_have_no_python_reprs() -> None:
    assert cell(None) == "-" and cell({}) == "-"
    assert cell({"order_number": "4417-2290"}) == "order_number=4417-2290"
    assert "\x1b" not in cell({"k": HOSTILE})
    assert count(1, "attempt") == "1 attempt" and count(3, "attempt") == "3 attempts"


def test_tables_have_a_header_and_aligned_columns() -> None:
    lines = table(("id", "status"), [("a", "processed"), ("longer-id", HOSTILE)]).splitlines()
    assert lines[0].split() == ["ID", "STATUS"]
    assert len({line.index(line.split()[1]) for line in lines[:2]}) == 1
    assert "\x1b" not in "\n".join(lines)
