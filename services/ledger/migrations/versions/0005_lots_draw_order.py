"""A wallet's open lots in the order debits draw them, so a debit reads the few lots it draws
from instead of every lot the wallet still holds (lot_store.lots_to_draw).

One new partial index; nothing else changes. On a large `lots` table an operator may prefer to
build it beforehand with CREATE INDEX CONCURRENTLY under the same name and definition; this
migration then finds it there and does nothing.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_lots_draw_order",
        "lots",
        ["account_id", "expires_at_us", "credited_at_us"],
        postgresql_where=sa.text("open_amount > 0"),
        sqlite_where=sa.text("open_amount > 0"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_lots_draw_order", table_name="lots")
