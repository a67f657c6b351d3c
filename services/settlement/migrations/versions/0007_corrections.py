"""Corrections: reversals priced at their originals' closed period (statement lines name it),
adjustments posted by the operator and carried by the next statement (ADJUSTMENT lines), and the
review status of reconciliation rows with its history.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Lines frozen before this revision read "" (no original period, no adjustment) and are not rewritten.
    with op.batch_alter_table("settlement_statement_lines") as batch:
        batch.add_column(sa.Column("original_period_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("adjustment_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("adjustment_reason", sa.String(500), nullable=False, server_default=""))
    op.create_table(
        "settlement_adjustments",
        sa.Column("adjustment_id", sa.String(128), primary_key=True),
        sa.Column("partner_id", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("reconciliation_id", sa.String(128), nullable=False),
        sa.Column("reconciliation_row_number", sa.Integer, nullable=False),
        sa.Column("statement_period_id", sa.String(64), nullable=False),
        sa.Column("statement_line_number", sa.Integer, nullable=False),
        sa.Column("post_time_us", sa.BigInteger, nullable=False),
        sa.Column("settled_period_id", sa.String(64), nullable=True),
        sa.CheckConstraint("amount_cents > 0", name="ck_settlement_adjustment_amount"),
        sa.CheckConstraint("direction IN ('PARTNER_PAYS', 'OPERATOR_PAYS')", name="ck_settlement_adjustment_direction"),
    )
    op.create_index("ix_settlement_adjustments_settled", "settlement_adjustments", ["settled_period_id", "partner_id"])
    op.create_table(
        "settlement_reconciliation_reviews",
        sa.Column("reconciliation_id", sa.String(128), primary_key=True),
        sa.Column("row_number", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.String(1000), nullable=False),
        sa.Column("change_time_us", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["reconciliation_id", "row_number"],
            ["settlement_reconciliation_rows.reconciliation_id", "settlement_reconciliation_rows.row_number"],
        ),
    )
    op.create_table(
        "settlement_reconciliation_review_history",
        sa.Column("change_id", sa.String(128), primary_key=True),
        sa.Column("reconciliation_id", sa.String(128), nullable=False),
        sa.Column("row_number", sa.Integer, nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("note", sa.String(1000), nullable=False),
        sa.Column("change_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_settlement_review_history_row",
        "settlement_reconciliation_review_history",
        ["reconciliation_id", "row_number", "change_time_us"],
    )


def downgrade() -> None:
    # Refused while closed statements carry what 0005 cannot represent: dropping ADJUSTMENT lines
    # would change closed nets, and a reversal line would lose the period that priced it.
    bind = op.get_bind()
    carried = bind.execute(
        sa.text("SELECT count(*) FROM settlement_statement_lines WHERE kind = 'ADJUSTMENT' OR original_period_id <> ''")
    ).scalar_one()
    if carried:
        raise RuntimeError("closed statements have ADJUSTMENT lines or reversals priced at an earlier period")
    op.drop_index("ix_settlement_review_history_row", table_name="settlement_reconciliation_review_history")
    op.drop_table("settlement_reconciliation_review_history")
    op.drop_table("settlement_reconciliation_reviews")
    op.drop_index("ix_settlement_adjustments_settled", table_name="settlement_adjustments")
    op.drop_table("settlement_adjustments")
    with op.batch_alter_table("settlement_statement_lines") as batch:
        batch.drop_column("adjustment_reason")
        batch.drop_column("adjustment_id")
        batch.drop_column("original_period_id")
