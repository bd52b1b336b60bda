"""transcript_lines: what was said in each conversation, one row per line, searchable


The lines are written by the database itself, from ``conversations.transcript``: triggers
rebuild a conversation's lines whenever its transcript is written, and remove them when the
transcript is cleared or the conversation deleted. So an erasure or a retention purge needs
nothing of its own: whatever removes a transcript removes what search finds of it.

PostgreSQL keeps a generated ``tsvector`` per line under a GIN index; SQLite an FTS5 index
over the lines (an external-content table, kept in step by triggers on the lines).
The system prompt (``role = 'system'``) is not indexed: it is not what was said.
"""

from alembic import op

revision = "0009"
down_revision = "0008"

POSTGRESQL_UP = [
    """
    CREATE TABLE transcript_lines (
        conversation_id VARCHAR(255) NOT NULL
            REFERENCES conversations (conversation_id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        role TEXT,
        content TEXT NOT NULL,
        document TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
        PRIMARY KEY (conversation_id, line)
    )
    """,
    "CREATE INDEX ix_transcript_lines_document ON transcript_lines USING GIN (document)",
    """
    CREATE FUNCTION transcript_lines_sync() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM transcript_lines WHERE conversation_id = NEW.conversation_id;
        INSERT INTO transcript_lines (conversation_id, line, role, content)
        SELECT NEW.conversation_id, entry.line - 1, entry.value ->> 'role',
               entry.value ->> 'content'
        FROM json_array_elements(
            CASE WHEN json_typeof(NEW.transcript) = 'array' THEN NEW.transcript ELSE '[]' END
        ) WITH ORDINALITY AS entry (value, line)
        WHERE json_typeof(entry.value) = 'object'
          AND json_typeof(entry.value -> 'content') = 'string'
          AND (entry.value ->> 'role') IS DISTINCT FROM 'system';
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER transcript_lines_sync
    AFTER INSERT OR UPDATE OF transcript ON conversations
    FOR EACH ROW EXECUTE FUNCTION transcript_lines_sync()
    """,
]
POSTGRESQL_DOWN = [
    "DROP TRIGGER transcript_lines_sync ON conversations",
    "DROP FUNCTION transcript_lines_sync()",
    "DROP TABLE transcript_lines",
]

# The lines of NEW's transcript, as the PostgreSQL function writes them.
_SQLITE_LINES = """
    INSERT INTO transcript_lines (conversation_id, line, role, content)
    SELECT NEW.conversation_id, entry.key, json_extract(entry.value, '$.role'),
           json_extract(entry.value, '$.content')
    FROM json_each(
        CASE WHEN json_valid(NEW.transcript) AND json_type(NEW.transcript) = 'array'
             THEN NEW.transcript ELSE '[]' END
    ) AS entry
    WHERE entry.type = 'object'
      AND json_type(entry.value, '$.content') = 'text'
      AND json_extract(entry.value, '$.role') IS NOT 'system';
"""
_SQLITE_FORGET = "DELETE FROM transcript_lines WHERE conversation_id = OLD.conversation_id;"
SQLITE_UP = [
    """
    CREATE TABLE transcript_lines (
        id INTEGER PRIMARY KEY,
        conversation_id VARCHAR(255) NOT NULL
            REFERENCES conversations (conversation_id) ON DELETE CASCADE,
        line INTEGER NOT NULL,
        role TEXT,
        content TEXT NOT NULL,
        UNIQUE (conversation_id, line)
    )
    """,
    """
    CREATE VIRTUAL TABLE transcript_search USING fts5(
        content, content='transcript_lines', content_rowid='id', tokenize='porter unicode61'
    )
    """,
    """
    CREATE TRIGGER transcript_lines_indexed AFTER INSERT ON transcript_lines BEGIN
        INSERT INTO transcript_search (rowid, content) VALUES (NEW.id, NEW.content);
    END
    """,
    """
    CREATE TRIGGER transcript_lines_unindexed AFTER DELETE ON transcript_lines BEGIN
        INSERT INTO transcript_search (transcript_search, rowid, content)
        VALUES ('delete', OLD.id, OLD.content);
    END
    """,
    f"""
    CREATE TRIGGER conversations_transcript_inserted AFTER INSERT ON conversations BEGIN
        {_SQLITE_LINES}
    END
    """,
    f"""
    CREATE TRIGGER conversations_transcript_updated AFTER UPDATE OF transcript ON conversations
    BEGIN
        {_SQLITE_FORGET}
        {_SQLITE_LINES}
    END
    """,
    f"""
    CREATE TRIGGER conversations_transcript_deleted AFTER DELETE ON conversations BEGIN
        {_SQLITE_FORGET}
    END
    """,
]
SQLITE_DOWN = [
    "DROP TRIGGER conversations_transcript_deleted",
    "DROP TRIGGER conversations_transcript_updated",
    "DROP TRIGGER conversations_transcript_inserted",
    "DROP TABLE transcript_search",
    "DROP TABLE transcript_lines",
]
# Transcripts stored before this migration: rewriting each one fires the triggers above.
BACKFILL = "UPDATE conversations SET transcript = transcript WHERE transcript IS NOT NULL"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRESQL_UP if postgresql else SQLITE_UP:
        op.execute(statement)
    op.execute(BACKFILL)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRESQL_DOWN if postgresql else SQLITE_DOWN:
        op.execute(statement)
