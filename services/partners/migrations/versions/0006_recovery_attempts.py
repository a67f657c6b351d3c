"""Recovery bookkeeping on every row the recovery pass may finish: how often it was tried and
when it may be tried again (services/partners/recovery.py).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = ("earns", "redemptions", "returns", "conversions")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("recovery_attempts", sa.Integer(), nullable=False, server_default="0"))
        op.add_column(table, sa.Column("next_recovery_us", sa.BigInteger(), nullable=False, server_default="0"))
        op.create_index(f"ix_{table}_recovery", table, ["state", "next_recovery_us"])


def downgrade() -> None:
    for table in _TABLES:
        op.drop_index(f"ix_{table}_recovery", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("next_recovery_us")
            batch.drop_column("recovery_attempts")
