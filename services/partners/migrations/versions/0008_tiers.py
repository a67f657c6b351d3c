"""Tiers (DOMAIN.md "Tiers"): definition versions per programme currency, each member's tier and
qualifying totals per currency, and the tier an earn was priced at with its bonus per line, so a
return reverses exactly its lines' bonus. Rows written before read "no tier" and a bonus of 0.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_NEW_COLUMNS = {
    "earns": (
        sa.Column("tier_name", sa.String(64), nullable=False, server_default=""),
        sa.Column("tier_multiplier", sa.String(40), nullable=False, server_default="1"),
        sa.Column("tier_bonus_points", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("tier_month", sa.Integer(), nullable=False, server_default="0"),
    ),
    "earn_lines": (sa.Column("tier_bonus_points", sa.BigInteger(), nullable=False, server_default="0"),),
    "returns": (
        sa.Column("tier_bonus_points_due", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("qualifying_points_due", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("qualifying_activities_due", sa.Integer(), nullable=False, server_default="0"),
    ),
}


def upgrade() -> None:
    op.create_table(
        "tier_definitions",
        sa.Column("currency_code", sa.String(16), nullable=False),
        sa.Column("effective_from_us", sa.BigInteger(), nullable=False),
        sa.Column("measure", sa.String(32), nullable=False),
        sa.Column("window", sa.String(32), nullable=False),
        sa.Column("grace_months", sa.Integer(), nullable=False),
        sa.Column("levels", sa.Text(), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("currency_code", "effective_from_us"),
        sa.CheckConstraint("grace_months >= 0", name="ck_tier_definitions_grace"),
    )
    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.String(64), sa.ForeignKey("members.member_id"), nullable=False),
        sa.Column("currency_code", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("since_us", sa.BigInteger(), nullable=False),
        sa.Column("anchor_us", sa.BigInteger(), nullable=False),
        sa.Column("qualifying_months", sa.Text(), nullable=False),
        sa.Column("update_time_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "currency_code"),
        sa.CheckConstraint("level >= 0", name="ck_member_tiers_level"),
    )
    for table, columns in _NEW_COLUMNS.items():
        for column in columns:
            op.add_column(table, column)


def downgrade() -> None:
    for table, columns in _NEW_COLUMNS.items():
        for column in columns:
            op.drop_column(table, column.name)
    op.drop_table("member_tiers")
    op.drop_table("tier_definitions")
