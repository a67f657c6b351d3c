"""The tier bonus billed to its funder: agreements name who funds the tier bonus of points earned
at their partner (the partner, as before, or the operator), and statements carry TIER_BONUS lines
(bonus issued minus bonus reversed, possibly <= 0).

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
    # Versions recorded before this revision leave the bonus with the partner, which is what the
    # statements they priced billed (the bonus was inside the points issued).
    with op.batch_alter_table("settlement_price_agreements") as batch:
        batch.add_column(sa.Column("tier_bonus_funder", sa.String(32), nullable=False, server_default="PARTNER"))
    # Lines frozen before this revision are never TIER_BONUS lines: they read 0, 0 and "" and are
    # not rewritten. The quantity check lets a TIER_BONUS line net to zero or below too.
    with op.batch_alter_table("settlement_statement_lines") as batch:
        batch.add_column(sa.Column("tier_bonus_issued_quantity", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("tier_bonus_reversed_quantity", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("tier_bonus_funder", sa.String(32), nullable=False, server_default=""))
        batch.drop_constraint("ck_settlement_line_quantity", type_="check")
        batch.create_check_constraint(
            "ck_settlement_line_quantity", "quantity > 0 OR kind IN ('BREAKAGE', 'TIER_BONUS')"
        )


def downgrade() -> None:
    # Refused while TIER_BONUS lines exist: the older code cannot read them, and dropping them
    # would change closed statements' nets (an operator-funded bonus is a credit).
    tier_bonus_lines = op.get_bind().execute(
        sa.text("SELECT count(*) FROM settlement_statement_lines WHERE kind = 'TIER_BONUS'")
    )
    if tier_bonus_lines.scalar_one():
        raise RuntimeError("closed statements have TIER_BONUS lines; revision 0004 cannot represent them")
    # Likewise while an agreement lets the operator fund the bonus: 0004 would bill it to the partner.
    operator_funded = op.get_bind().execute(
        sa.text("SELECT count(*) FROM settlement_price_agreements WHERE tier_bonus_funder <> 'PARTNER'")
    )
    if operator_funded.scalar_one():
        raise RuntimeError("agreements let the operator fund the tier bonus; revision 0004 cannot represent them")
    with op.batch_alter_table("settlement_statement_lines") as batch:
        batch.drop_constraint("ck_settlement_line_quantity", type_="check")
        batch.create_check_constraint("ck_settlement_line_quantity", "quantity > 0 OR kind = 'BREAKAGE'")
        batch.drop_column("tier_bonus_funder")
        batch.drop_column("tier_bonus_reversed_quantity")
        batch.drop_column("tier_bonus_issued_quantity")
    with op.batch_alter_table("settlement_price_agreements") as batch:
        batch.drop_column("tier_bonus_funder")
