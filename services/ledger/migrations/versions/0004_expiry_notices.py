"""Expiry notices: one row per member wallet, lot, expiry round and expiry date, recorded by the
expiry pass once the lot's points are within their notice period (WatchExpiryNotices).

Self-contained: one new table and its indexes; nothing else changes. Lots already in their
notice period get their notices at the ledger's first expiry pass after the upgrade, and then
expire no sooner than a full notice period later.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(160)


def upgrade() -> None:
    op.create_table(
        "expiry_notices",
        sa.Column("notice_sequence", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("lot_id", ID, nullable=False),
        sa.Column("expiry_round", sa.Integer, nullable=False),
        sa.Column("due_at_us", sa.BigInteger, nullable=False),
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("currency_code", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
        sa.Column("noticed_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("notice_sequence"),
        sa.UniqueConstraint("account_id", "lot_id", "expiry_round", "due_at_us", name="uq_expiry_notices_lot"),
        sa.CheckConstraint("amount > 0", name="ck_expiry_notices_amount"),
        sa.CheckConstraint("expires_at_us >= due_at_us", name="ck_expiry_notices_not_before_due"),
    )


def downgrade() -> None:
    op.drop_table("expiry_notices")
