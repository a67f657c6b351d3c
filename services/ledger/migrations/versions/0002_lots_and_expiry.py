"""Expiry: policy versions per currency, lots of member wallets, their draws, wallets' last activity,
owners exempt from expiry.

Wallets that hold points already get one never-expiring lot of their posted balance, so open
lots sum to every tracked wallet's posted balance from the start.

Revision ID: 0002
Revises: 0001
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(160)
OPENING_LOT_ID = "#opening-balance"
POLICY_NONE = 1


def upgrade() -> None:
    op.create_table(
        "expiry_policies",
        sa.Column("currency_code", sa.String(16), nullable=False),
        sa.Column("effective_from_us", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("months", sa.Integer, nullable=False),
        sa.Column("sweep_month", sa.SmallInteger, nullable=False),
        sa.Column("sweep_day", sa.SmallInteger, nullable=False),
        sa.Column("notice_days", sa.Integer, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("currency_code", "effective_from_us"),
    )
    op.create_table(
        "lots",
        sa.Column("account_id", ID, nullable=False),
        sa.Column("lot_id", ID, nullable=False),
        sa.Column("credited_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("open_amount", sa.BigInteger, nullable=False),
        sa.Column("policy_kind", sa.SmallInteger, nullable=False),
        sa.Column("months", sa.Integer, nullable=False),
        sa.Column("notice_days", sa.Integer, nullable=False),
        sa.Column("issuer_id", sa.String(128), nullable=False),
        sa.Column("expiry_round", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "lot_id"),
        sa.CheckConstraint("open_amount >= 0 AND open_amount <= amount", name="ck_lots_open_amount"),
    )
    op.create_index(
        "ix_lots_due",
        "lots",
        ["expires_at_us"],
        postgresql_where=sa.text("open_amount > 0"),
        sqlite_where=sa.text("open_amount > 0"),
    )
    op.create_table(
        "lot_draws",
        sa.Column("transfer_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("lot_id", ID, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("restores_transfer_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("transfer_id", "account_id", "lot_id"),
    )
    op.create_index("ix_lot_draws_restores", "lot_draws", ["restores_transfer_id"])
    op.create_table(
        "expiry_exemptions",
        sa.Column("owner_id", sa.String(128), primary_key=True),
        sa.Column("exempt", sa.Boolean, nullable=False),
        sa.Column("changed_at_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "wallet_activity",
        sa.Column("account_id", ID, primary_key=True),
        sa.Column("last_activity_us", sa.BigInteger, nullable=False),
    )
    now_us = int(time.time() * 1_000_000)
    op.execute(
        sa.text(
            "INSERT INTO lots (account_id, lot_id, credited_at_us, expires_at_us, amount, open_amount, policy_kind, "
            "months, notice_days, issuer_id, expiry_round) "
            "SELECT a.id, :lot_id, :now_us, NULL, b.credits_posted - b.debits_posted, "
            "b.credits_posted - b.debits_posted, :none, 0, 30, '', 0 "
            "FROM accounts a JOIN account_balances b ON b.account_id = a.id "
            "WHERE a.kind = 'member_wallet' AND a.no_overdraft AND a.normal_side = 2 "
            "AND b.credits_posted > b.debits_posted"
        ).bindparams(lot_id=OPENING_LOT_ID, now_us=now_us, none=POLICY_NONE)
    )


def downgrade() -> None:
    op.drop_table("wallet_activity")
    op.drop_table("expiry_exemptions")
    op.drop_index("ix_lot_draws_restores", table_name="lot_draws")
    op.drop_table("lot_draws")
    op.drop_index("ix_lots_due", table_name="lots")
    op.drop_table("lots")
    op.drop_table("expiry_policies")
