"""The recovery pass's index holds unfinished rows only (services/partners/store/tables.py).

The index on (state, next_recovery_us) took an entry for every state a row ever had: an earn
wrote it when recorded and again when posted, a hold three times, and the index grew with
every row ever written. A partial index on next_recovery_us over the unfinished states stays
as small as the recovery backlog, and a row that is finished leaves it instead of being
written to it again.

Like every migration here it runs in one transaction, so the build locks the table's writes
while it runs: on a table too large for that, build the new index CONCURRENTLY by hand first
(same name and definition) and this migration skips it.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen here: a later change of a table's unfinished states is a migration of its own.
_UNFINISHED = {
    "earns": "state IN ('pending')",
    "returns": "state IN ('new', 'pending')",
    "conversions": "state IN ('pending')",
    "redemptions": "state IN ('authorized')",
}


def upgrade() -> None:
    existing = {
        table: {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)} for table in _UNFINISHED
    }
    for table, predicate in _UNFINISHED.items():
        if f"ix_{table}_unfinished" not in existing[table]:
            op.create_index(
                f"ix_{table}_unfinished",
                table,
                ["next_recovery_us"],
                sqlite_where=sa.text(predicate),
                postgresql_where=sa.text(predicate),
            )
        op.drop_index(f"ix_{table}_recovery", table_name=table)


def downgrade() -> None:
    for table in _UNFINISHED:
        op.create_index(f"ix_{table}_recovery", table, ["state", "next_recovery_us"])
        op.drop_index(f"ix_{table}_unfinished", table_name=table)
