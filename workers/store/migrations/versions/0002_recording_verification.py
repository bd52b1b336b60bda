"""recording verification: result, attempts and object facts on recordings"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

COLUMNS = (
    ("ready_event_id", sa.String(length=36)),
    ("verification_status", sa.String(length=16)),
    ("verification_reason", sa.Text()),
    ("verification_started_at", sa.DateTime(timezone=True)),
    ("verification_checked_at", sa.DateTime(timezone=True)),
    ("verification_next_at", sa.DateTime(timezone=True)),
    ("verification_call_seconds", sa.Double()),
    ("verification_alert", sa.JSON()),
    ("object_size", sa.BigInteger()),
    ("object_etag", sa.Text()),
    ("object_checksum", sa.Text()),
    ("object_content_type", sa.Text()),
    ("object_last_modified", sa.DateTime(timezone=True)),
    ("object_version", sa.Text()),
)
COUNTERS = ("verification_round", "verification_attempts")


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        for name in COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
        for name in reversed(COUNTERS):
            batch.drop_column(name)
