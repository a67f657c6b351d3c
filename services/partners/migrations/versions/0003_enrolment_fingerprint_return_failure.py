"""An enrolment remembers its content, so a reused request_id with other aliases is refused;
a return the ledger refused remembers why, so a retry says the same.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        # NULL for members enrolled before this revision: their retries are not checked.
        batch.add_column(sa.Column("enroll_fingerprint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("returns") as batch:
        batch.add_column(sa.Column("failure_reason", sa.String(length=64), nullable=True))
    op.create_index("ix_earns_state", "earns", ["state", "create_time_us"])


def downgrade() -> None:
    op.drop_index("ix_earns_state", table_name="earns")
    with op.batch_alter_table("returns") as batch:
        batch.drop_column("failure_reason")
    with op.batch_alter_table("members") as batch:
        batch.drop_column("enroll_fingerprint")
