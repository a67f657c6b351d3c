"""A refused earn uses up nothing (DOMAIN.md): a receipt is unique among the earns that were
not refused, so a receipt whose earn the ledger refused may be earned again under a new
request id, while two live earns of one receipt stay impossible.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NOT_REFUSED = sa.text("state <> 'failed'")
_REFUSED = sa.text("state = 'failed'")


def upgrade() -> None:
    with op.batch_alter_table("earns") as batch:
        batch.drop_constraint("uq_earns_receipt", type_="unique")
    op.create_index(
        "uq_earns_receipt",
        "earns",
        ["partner_id", "receipt_id"],
        unique=True,
        sqlite_where=_NOT_REFUSED,
        postgresql_where=_NOT_REFUSED,
    )
    # A return of a receipt whose only earns were refused finds them here; refused earns are
    # rare, so this index stays small and an earn that is not refused never writes to it.
    op.create_index(
        "ix_earns_refused_receipt",
        "earns",
        ["partner_id", "receipt_id"],
        sqlite_where=_REFUSED,
        postgresql_where=_REFUSED,
    )


def downgrade() -> None:
    receipts_earned_again = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM (SELECT partner_id, receipt_id FROM earns"
                " GROUP BY partner_id, receipt_id HAVING count(*) > 1) AS again"
            )
        )
        .scalar_one()
    )
    if receipts_earned_again:
        raise RuntimeError(
            f"cannot go below 0007: {receipts_earned_again} receipts were earned again after a refused earn,"
            " and before 0007 a receipt holds one earn only"
        )
    op.drop_index("ix_earns_refused_receipt", table_name="earns")
    op.drop_index("uq_earns_receipt", table_name="earns")
    with op.batch_alter_table("earns") as batch:
        batch.create_unique_constraint("uq_earns_receipt", ["partner_id", "receipt_id"])
