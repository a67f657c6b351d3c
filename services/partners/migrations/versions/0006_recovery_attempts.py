"""Recovery bookkeeping on every row the recovery pass may finish: how often it was tried and
when it may be tried again (services/partners/recovery.py). The pass finds its rows by state
and next attempt time, so the older by-state indexes go: every earn and hold pays for each
index it is written to.

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
_OLD_INDEXES = {
    "earns": ("ix_earns_state", ["state", "create_time_us"]),
    "redemptions": ("ix_redemptions_state", ["state", "expire_time_us"]),
    "returns": ("ix_returns_state", ["state", "create_time_us"]),
    "conversions": ("ix_conversions_state", ["state", "create_time_us"]),
}


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("recovery_attempts", sa.Integer(), nullable=False, server_default="0"))
        op.add_column(table, sa.Column("next_recovery_us", sa.BigInteger(), nullable=False, server_default="0"))
        op.create_index(f"ix_{table}_recovery", table, ["state", "next_recovery_us"])
        op.drop_index(_OLD_INDEXES[table][0], table_name=table)


def downgrade() -> None:
    for table in _TABLES:
        op.create_index(_OLD_INDEXES[table][0], table, _OLD_INDEXES[table][1])
        op.drop_index(f"ix_{table}_recovery", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("next_recovery_us")
            batch.drop_column("recovery_attempts")
