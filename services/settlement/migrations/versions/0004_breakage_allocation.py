"""Breakage allocated per agreement: agreements name who keeps the breakage of the points their
partner issued, and statements carry BREAKAGE lines (expired minus reinstated, possibly <= 0).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Versions recorded before this revision leave the breakage to the operator, as it always was.
    with op.batch_alter_table("settlement_price_agreements") as batch:
        batch.add_column(sa.Column("breakage_owner", sa.String(32), nullable=False, server_default="OPERATOR"))
    # Lines frozen before this revision are never BREAKAGE lines: they read 0, 0 and "" and are
    # not rewritten. The quantity check lets a BREAKAGE line net to zero or below.
    with op.batch_alter_table("settlement_statement_lines") as batch:
        batch.add_column(sa.Column("expired_quantity", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("reinstated_quantity", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("breakage_owner", sa.String(32), nullable=False, server_default=""))
        batch.drop_constraint("ck_settlement_line_quantity", type_="check")
        batch.create_check_constraint("ck_settlement_line_quantity", "quantity > 0 OR kind = 'BREAKAGE'")


def downgrade() -> None:
    # Refused while BREAKAGE lines exist: the older code cannot read them, and dropping them would
    # change closed statements' nets.
    breakage_lines = op.get_bind().execute(
        sa.text("SELECT count(*) FROM settlement_statement_lines WHERE kind = 'BREAKAGE'")
    )
    if breakage_lines.scalar_one():
        raise RuntimeError("closed statements have BREAKAGE lines; revision 0003 cannot represent them")
    with op.batch_alter_table("settlement_statement_lines") as batch:
        batch.drop_constraint("ck_settlement_line_quantity", type_="check")
        batch.create_check_constraint("ck_settlement_line_quantity", "quantity > 0")
        batch.drop_column("breakage_owner")
        batch.drop_column("reinstated_quantity")
        batch.drop_column("expired_quantity")
    with op.batch_alter_table("settlement_price_agreements") as batch:
        batch.drop_column("breakage_owner")
