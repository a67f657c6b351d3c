"""Indexes for the server's recovery pass: unfinished returns and conversions by age, and
authorized redemptions by hold expiry.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_returns_state", "returns", ["state", "create_time_us"])
    op.create_index("ix_conversions_state", "conversions", ["state", "create_time_us"])
    op.create_index("ix_redemptions_state", "redemptions", ["state", "expire_time_us"])


def downgrade() -> None:
    op.drop_index("ix_redemptions_state", table_name="redemptions")
    op.drop_index("ix_conversions_state", table_name="conversions")
    op.drop_index("ix_returns_state", table_name="returns")
