"""Transcript search: the conversations where something was said, best match first, each with
the line that matched (who said it, and a snippet with the words marked).

One interface over two engines: SQLite's FTS5 (``transcript_search``, BM25) and PostgreSQL's
full-text search (``transcript_lines.document``, ``ts_rank``). Both stem English words, so
"orders" finds "order". The lines are kept by the database itself from
``conversations.transcript`` (migration 0008): clearing a transcript or deleting a
conversation removes its lines, so nothing erased or purged is ever found.

What a person types: words, all of which must appear in one line, and "quoted phrases".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    column,
    func,
    literal_column,
    select,
    table,
)
from sqlalchemy.orm import Session

from .models import Conversation
from .sealed import cipher_of

# What the database puts around each matched word in a snippet: private-use characters, taken
# out again by ``Match.of`` and given as offsets instead (a transcript that held one would only
# shift a highlight, never break the answer).
START, STOP = "\ue000", "\ue001"
ELLIPSIS = "…"
SNIPPET_WORDS = 24  # about two lines of a page: a short line is shown whole
MAX_QUERY_LENGTH = 200

LINES = table(
    "transcript_lines",
    column("id"),
    column("conversation_id"),
    column("line"),
    column("role"),
    column("content"),
    column("document"),
)
FTS = table("transcript_search", column("rowid"))
FTS_TABLE = literal_column("transcript_search")  # the table named as a column: MATCH, bm25()
ENGLISH = literal_column("'english'::regconfig")


@dataclass(frozen=True)
class Match:
    """The best line of one conversation for a search."""

    line: int  # its index in the conversation's transcript
    role: str | None  # who said it: "user", "assistant", or None when Tavus did not say
    snippet: str  # the words around the match, "…" where the line goes on
    highlights: list[tuple[int, int]]  # [start, end) of each matched word in ``snippet``

    @classmethod
    def of(cls, line: int, role: str | None, marked: str, content: str) -> Match:
        """The snippet as the database marked it, the marks turned into offsets, and "…" where
        it leaves out the beginning or the end of the line (``content``)."""
        parts, highlights, start, length = [], [], None, 0
        for part in re.split(f"([{START}{STOP}])", marked):
            if part == START:
                start = length
            elif part == STOP:
                if start is not None:
                    highlights.append((start, length))
                start = None
            else:
                parts.append(part)
                length += len(part)
        joined = "".join(parts)
        plain = joined.strip()
        before = "" if content.lstrip().startswith(plain) else ELLIPSIS
        after = "" if content.rstrip().endswith(plain) else ELLIPSIS
        moved = len(before) - (len(joined) - len(joined.lstrip()))  # "…" in, blanks out
        spans = [(begin + moved, end + moved) for begin, end in highlights]
        return cls(line, role, before + plain + after, spans)

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "role": self.role,
            "snippet": self.snippet,
            "highlights": [list(span) for span in self.highlights],
        }


class SearchOff(Exception):
    """Transcript search is off: with ENCRYPTION_KEYS set, transcripts are stored sealed and no
    plain-text index of them is kept (the triggers of migration 0009 index only plain arrays)."""

    def __init__(self) -> None:
        super().__init__(
            "transcript search is off while ENCRYPTION_KEYS is set: transcripts are stored "
            "encrypted and no plain-text index of them is kept"
        )


def available(session: Session) -> bool:
    """False with ENCRYPTION_KEYS set (see ``SearchOff``)."""
    return cipher_of(session.get_bind().dialect) is None


def terms(words: str) -> list[str]:
    """The "quoted phrases" and single words of what a person typed, quotes taken off; what
    holds no letter or digit is dropped (it could match nothing)."""
    found = re.findall(r'"([^"]*)"|(\S+)', words)
    pieces = [(phrase or word).replace('"', " ").strip() for phrase, word in found]
    return [piece for piece in pieces if re.search(r"\w", piece)]


def search(
    session: Session,
    words: str,
    *where: ColumnElement[bool],
    limit: int,
    offset: int = 0,
) -> list[tuple[Conversation, Match]]:
    """The conversations (those ``where`` allows) with a line holding ``words``, best first,
    each with its best line. Nothing when ``words`` holds no word; ``SearchOff`` with
    ENCRYPTION_KEYS set."""
    if not available(session):
        raise SearchOff()
    wanted = terms(words)
    if not wanted:
        return []
    postgresql = session.get_bind().dialect.name == "postgresql"
    hits, snippet_of = _postgresql_hits(wanted) if postgresql else _sqlite_hits(wanted)
    hits = hits.subquery("hits")
    place = func.row_number().over(partition_by=hits.c.conversation_id, order_by=hits.c.score)
    ranked = select(hits, place.label("place")).subquery("ranked")
    query = (
        select(Conversation, ranked.c.line, ranked.c.role, snippet_of(ranked), ranked.c.content)
        .join(ranked, ranked.c.conversation_id == Conversation.conversation_id)
        .where(ranked.c.place == 1, *where)
        .order_by(ranked.c.score, Conversation.conversation_id)
        .limit(limit)
        .offset(offset)
    )
    return [
        (convo, Match.of(line, role, snippet, content))
        for convo, line, role, snippet, content in session.execute(query)
    ]


# The matching lines with their score (lower is better), and how to get the snippet of a line
# of the ranked subquery.
Hits = tuple[Select, Callable[[Subquery], ColumnElement[str]]]


def _sqlite_hits(wanted: Sequence[str]) -> Hits:
    """FTS5: each term a quoted string (a phrase; FTS5's operators stay text), all required.
    BM25 scores are lower for better matches. ``snippet()`` works only inside the FTS query."""
    query = " ".join('"' + term.replace('"', '""') + '"' for term in wanted)
    snippet = func.snippet(FTS_TABLE, 0, START, STOP, "", SNIPPET_WORDS)
    hits = (
        select(
            LINES.c.conversation_id,
            LINES.c.line,
            LINES.c.role,
            LINES.c.content,
            func.bm25(FTS_TABLE).label("score"),
            snippet.label("snippet"),
        )
        .select_from(FTS.join(LINES, LINES.c.id == FTS.c.rowid))
        .where(FTS_TABLE.op("MATCH")(query))
    )
    return hits, lambda ranked: ranked.c.snippet


def _postgresql_hits(wanted: Sequence[str]) -> Hits:
    """``websearch_to_tsquery`` over the same quoted terms (all required, each a phrase);
    ``ts_rank`` is higher for better matches, so it is negated to sort as BM25 does. The
    headline, the costly part, is made only for the lines of the page shown."""
    query = func.websearch_to_tsquery(ENGLISH, " ".join('"' + term + '"' for term in wanted))
    options = (
        f"StartSel={START}, StopSel={STOP}, MaxWords={SNIPPET_WORDS}, "
        f"MinWords={SNIPPET_WORDS - 4}, ShortWord=0"
    )
    hits = select(
        LINES.c.conversation_id,
        LINES.c.line,
        LINES.c.role,
        LINES.c.content,
        (-func.ts_rank(LINES.c.document, query)).label("score"),
    ).where(LINES.c.document.op("@@")(query))
    return hits, lambda ranked: func.ts_headline(ENGLISH, ranked.c.content, query, options)
