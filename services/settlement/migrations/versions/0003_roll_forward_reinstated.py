"""Roll-forwards carry reinstated points (breakage reversed into wallets) apart from other adjustments.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Periods closed before this revision count any reinstatement in other_adjustments; they keep 0
    # here, so their identity still holds and their frozen figures are not rewritten.
    with op.batch_alter_table("settlement_roll_forwards") as batch:
        batch.add_column(sa.Column("reinstated", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("settlement_roll_forwards") as batch:
        batch.drop_column("reinstated")
