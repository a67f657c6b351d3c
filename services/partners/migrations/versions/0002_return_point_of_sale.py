"""Returns remember their store and terminal, so every reversal carries full metadata.

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
    with op.batch_alter_table("returns") as batch:
        batch.add_column(sa.Column("store_id", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("terminal_id", sa.String(length=64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("returns") as batch:
        batch.drop_column("terminal_id")
        batch.drop_column("store_id")
