"""tool_deliveries: Tavus's signed tool deliveries (post-call actions), by conversation"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "tool_deliveries",
        sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.String(255),
            sa.ForeignKey("conversations.conversation_id"),
            nullable=False,
        ),
        sa.Column("tool_name", sa.String(255), nullable=False),
        sa.Column("tool_call_id", sa.String(255), nullable=True),
        sa.Column("arguments", sa.JSON(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("tool_deliveries") as batch:
        batch.create_index("ix_tool_deliveries_conversation_id", ["conversation_id"])


def downgrade() -> None:
    with op.batch_alter_table("tool_deliveries") as batch:
        batch.drop_index("ix_tool_deliveries_conversation_id")
    op.drop_table("tool_deliveries")
