"""API keys an operator can tell apart without the secret: the key's last four characters
(`key_hint`, shown by ListApiKeys) and, for a key revoked by a rotation, the key that replaced
it. Keys issued before read an empty hint and no replacement.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("key_hint", sa.String(8), nullable=False, server_default=""))
    op.add_column("api_keys", sa.Column("replaced_by_key_id", sa.String(40), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "replaced_by_key_id")
    op.drop_column("api_keys", "key_hint")
