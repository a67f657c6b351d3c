"""Admin mutations remember their request_id, so a retry creates no second rule version or
key; an earn the ledger refused is marked failed with the reason instead of staying pending.

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
    op.create_table(
        "admin_requests",
        sa.Column("caller_id", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("result_id", sa.String(length=128), nullable=False),
        sa.Column("sealed_secret", sa.String(length=256), nullable=True),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "operation IN ('create_earn_rule', 'create_conversion_rule', 'issue_api_key', 'rotate_api_key')",
            name="ck_admin_requests_operation",
        ),
        sa.PrimaryKeyConstraint("caller_id", "operation", "request_id"),
    )
    with op.batch_alter_table("earns") as batch:
        batch.add_column(sa.Column("failure_reason", sa.String(length=64), nullable=True))
        batch.drop_constraint("ck_earns_state", type_="check")
        batch.create_check_constraint("ck_earns_state", "state IN ('pending', 'posted', 'failed')")


def downgrade() -> None:
    with op.batch_alter_table("earns") as batch:
        batch.drop_constraint("ck_earns_state", type_="check")
        batch.create_check_constraint("ck_earns_state", "state IN ('pending', 'posted')")
        batch.drop_column("failure_reason")
    op.drop_table("admin_requests")
