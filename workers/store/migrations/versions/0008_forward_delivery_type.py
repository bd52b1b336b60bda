"""forward_deliveries.type: the destination type each delivery went through (webhook, hook,
redis_stream, amqp, ...), recorded so that a listing and a redeliver need not guess it
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    # Before this revision only two types existed, told apart by their names: hooks are
    # "hook:<module>.<function>", and every FORWARD_<NAME>_URL was a webhook.
    with op.batch_alter_table("forward_deliveries") as batch:
        batch.add_column(sa.Column("type", sa.String(32), nullable=False, server_default="webhook"))
    op.execute("UPDATE forward_deliveries SET type = 'hook' WHERE destination LIKE 'hook:%'")


def downgrade() -> None:
    with op.batch_alter_table("forward_deliveries") as batch:
        batch.drop_column("type")
