"""Statements as documents: agreement terms (payment terms, tax rate and note), partner billing
details versions, gapless statement number counters, and each closed statement's document with
its per-store lines.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Versions recorded before this revision: 30 days, no tax (what their statements showed: a net).
    with op.batch_alter_table("settlement_price_agreements") as batch:
        batch.add_column(sa.Column("payment_terms_days", sa.Integer, nullable=False, server_default="30"))
        batch.add_column(sa.Column("tax_rate_percent", sa.String(16), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tax_note", sa.String(500), nullable=False, server_default=""))
    op.create_table(
        "settlement_billing_details",
        sa.Column("billing_details_id", sa.String(128), primary_key=True),
        sa.Column("partner_id", sa.String(128), nullable=False),
        sa.Column("effective_from_us", sa.BigInteger, nullable=False),
        sa.Column("legal_name", sa.String(200), nullable=False),
        sa.Column("address", sa.String(500), nullable=False),
        sa.Column("vat_id", sa.String(16), nullable=False),
        sa.Column("iban", sa.String(34), nullable=False),
        sa.Column("billing_email", sa.String(254), nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("partner_id", "effective_from_us", name="uq_settlement_billing_partner_start"),
    )
    op.create_table(
        "settlement_statement_counters",
        sa.Column("series", sa.String(16), primary_key=True),
        sa.Column("last_number", sa.BigInteger, nullable=False),
    )
    # Periods closed before this revision have no document (and no number): they read as before.
    op.create_table(
        "settlement_statement_documents",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(128), primary_key=True),
        sa.Column("statement_number", sa.String(32), nullable=False),
        sa.Column("issue_date", sa.String(10), nullable=False),
        sa.Column("due_date", sa.String(10), nullable=False),
        sa.Column("payment_terms_days", sa.Integer, nullable=False),
        sa.Column("tax_rate_percent", sa.String(16), nullable=False),
        sa.Column("tax_note", sa.String(500), nullable=False),
        sa.Column("net_cents", sa.BigInteger, nullable=False),
        sa.Column("tax_cents", sa.BigInteger, nullable=False),
        sa.Column("gross_cents", sa.BigInteger, nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("partner_billing_json", sa.Text, nullable=False),
        sa.Column("operator_billing_json", sa.Text, nullable=False),
        sa.UniqueConstraint("statement_number", name="uq_settlement_statement_number"),
        sa.ForeignKeyConstraint(
            ["period_id", "partner_id"], ["settlement_statements.period_id", "settlement_statements.partner_id"]
        ),
    )
    op.create_table(
        "settlement_statement_store_lines",
        sa.Column("period_id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(128), primary_key=True),
        sa.Column("line_number", sa.Integer, primary_key=True),
        sa.Column("store_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("currency_code", sa.String(16), nullable=False),
        sa.Column("transaction_count", sa.BigInteger, nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.ForeignKeyConstraint(
            ["period_id", "partner_id"],
            ["settlement_statement_documents.period_id", "settlement_statement_documents.partner_id"],
        ),
    )


def downgrade() -> None:
    # Refused once a statement was numbered: dropping the documents would let numbers be given
    # again (a gapless series never reuses one), and 0005 cannot show what was sent out.
    numbered = op.get_bind().execute(sa.text("SELECT count(*) FROM settlement_statement_documents"))
    if numbered.scalar_one():
        raise RuntimeError("closed statements have numbered documents; revision 0005 cannot represent them")
    op.drop_table("settlement_statement_store_lines")
    op.drop_table("settlement_statement_documents")
    op.drop_table("settlement_statement_counters")
    op.drop_table("settlement_billing_details")
    with op.batch_alter_table("settlement_price_agreements") as batch:
        batch.drop_column("tax_note")
        batch.drop_column("tax_rate_percent")
        batch.drop_column("payment_terms_days")
