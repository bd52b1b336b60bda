"""erasures: the tombstones of erased conversations, replicas, videos and documents

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("target", sa.String(300), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_by", sa.String(255), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erasures")
