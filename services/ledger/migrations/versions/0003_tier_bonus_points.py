"""Transfers record the part of their amount that is a tier bonus (TransferMetadata.tier_bonus_points),
for settlement to bill the bonus to its funder. Transfers stored before read 0.

A plain ADD COLUMN with a constant default: PostgreSQL keeps the default in the catalogue and
rewrites no row (the journal's triggers refuse UPDATE), and SQLite adds the column in place.

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
    op.add_column("transfers", sa.Column("tier_bonus_points", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("transfers", "tier_bonus_points")
