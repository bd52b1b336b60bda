"""guardrail_triggers.guardrail: TEXT, so that a name sealed with ENCRYPTION_KEYS fits

A sealed value is longer than the 255 characters an id column allows. SQLite does not enforce a
VARCHAR length, so only PostgreSQL's column changes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("guardrail_triggers", "guardrail", type_=sa.Text())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("guardrail_triggers", "guardrail", type_=sa.String(255))
