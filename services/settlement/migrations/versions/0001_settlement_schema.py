"""Settlement schema: price agreements, periods with frozen statements, roll-forwards, reconciliations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settlement_price_agreements",
        sa.Column("agreement_id", sa.String(128), primary_key=True),
        sa.Column("partner_id", sa.String(128), nullable=False),
        sa.Column("valid_from_us", sa.BigInteger, nullable=False),
        sa.Column("prices_json", sa.Text, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("partner_id", "valid_from_us", name="uq_settlement_agreement_partner_start"),
    )
    op.create_table(
        "settlement_periods",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_commit_sequence", sa.BigInteger, nullable=False),
        sa.Column("close_time_us", sa.BigInteger, nullable=False),
        sa.CheckConstraint("end_us > start_us", name="ck_settlement_period_window"),
        sa.CheckConstraint("state IN ('CLOSING', 'CLOSED')", name="ck_settlement_period_state"),
        sa.UniqueConstraint("start_us", name="uq_settlement_period_start"),
    )
    op.create_table(
        "settlement_statements",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(128), primary_key=True),
        sa.Column("net_cents", sa.BigInteger, nullable=False),
        sa.Column("settlement_transfer_id", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(["period_id"], ["settlement_periods.period_id"]),
    )
    op.create_table(
        "settlement_statement_lines",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(128), primary_key=True),
        sa.Column("line_number", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("currency_code", sa.String(16), nullable=False),
        sa.Column("counterparty_currency_code", sa.String(16), nullable=False),
        sa.Column("counterparty_id", sa.String(128), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("unit_price", sa.String(40), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("prior_period_adjustment", sa.Boolean, nullable=False),
        sa.CheckConstraint("quantity > 0", name="ck_settlement_line_quantity"),
        sa.ForeignKeyConstraint(
            ["period_id", "partner_id"],
            ["settlement_statements.period_id", "settlement_statements.partner_id"],
        ),
    )
    op.create_table(
        "settlement_roll_forwards",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("currency_code", sa.String(16), primary_key=True),
        *(
            sa.Column(name, sa.BigInteger, nullable=False)
            for name in (
                "opening_outstanding",
                "issued",
                "earn_reversed",
                "redeemed",
                "redemption_reversed",
                "expired",
                "converted_in",
                "converted_out",
                "other_adjustments",
                "closing_outstanding",
            )
        ),
        sa.ForeignKeyConstraint(["period_id"], ["settlement_periods.period_id"]),
    )
    op.create_table(
        "settlement_reconciliations",
        sa.Column("reconciliation_id", sa.String(128), primary_key=True),
        sa.Column("partner_id", sa.String(128), nullable=False),
        sa.Column("period_id", sa.String(64), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "settlement_reconciliation_rows",
        sa.Column("reconciliation_id", sa.String(128), primary_key=True),
        sa.Column("row_number", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("file_line_number", sa.Integer, nullable=False),
        sa.Column("receipt_id", sa.String(128), nullable=False),
        sa.Column("store_id", sa.String(128), nullable=False),
        sa.Column("terminal_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("partner_points", sa.BigInteger, nullable=False),
        sa.Column("ledger_points", sa.BigInteger, nullable=False),
        sa.Column("time", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["reconciliation_id"], ["settlement_reconciliations.reconciliation_id"]),
    )


def downgrade() -> None:
    for table in (
        "settlement_reconciliation_rows",
        "settlement_reconciliations",
        "settlement_roll_forwards",
        "settlement_statement_lines",
        "settlement_statements",
        "settlement_periods",
        "settlement_price_agreements",
    ):
        op.drop_table(table)
