"""Reconciliation rows carry the currency they were matched in (matching is per receipt, type and currency).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows stored before this revision were matched across currencies; they keep an empty code.
    with op.batch_alter_table("settlement_reconciliation_rows") as batch:
        batch.add_column(sa.Column("currency_code", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("settlement_reconciliation_rows") as batch:
        batch.drop_column("currency_code")
