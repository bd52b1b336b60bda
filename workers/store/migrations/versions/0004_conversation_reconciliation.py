"""conversations: reconciliation bookkeeping (pulls from the Tavus API)"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("reconcile_checks", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("reconcile_after", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("reconcile_after")
        batch.drop_column("reconcile_checks")
