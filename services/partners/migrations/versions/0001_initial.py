"""Initial partners schema: partners, stores, terminals, keys, rules, members and POS records.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversion_rules",
        sa.Column("from_currency", sa.String(length=16), nullable=False),
        sa.Column("to_currency", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_units", sa.BigInteger(), nullable=False),
        sa.Column("to_units", sa.BigInteger(), nullable=False),
        sa.Column("bonus_block_from_amount", sa.BigInteger(), nullable=False),
        sa.Column("bonus_to_amount", sa.BigInteger(), nullable=False),
        sa.Column("min_from_amount", sa.BigInteger(), nullable=False),
        sa.Column("step_from_amount", sa.BigInteger(), nullable=False),
        sa.Column("max_from_amount", sa.BigInteger(), nullable=False),
        sa.Column("annual_cap_from_amount", sa.BigInteger(), nullable=False),
        sa.Column("valid_from_us", sa.BigInteger(), nullable=False),
        sa.Column("valid_to_us", sa.BigInteger(), nullable=True),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("from_units > 0 AND to_units > 0", name="ck_conversion_rules_ratio"),
        sa.PrimaryKeyConstraint("from_currency", "to_currency", "version"),
    )
    op.create_table(
        "members",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("enroll_caller_id", sa.String(length=32), nullable=False),
        sa.Column("enroll_request_id", sa.String(length=64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id"),
        sa.UniqueConstraint("enroll_caller_id", "enroll_request_id", name="uq_members_enroll_request"),
    )
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("programme_currency_code", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.Column("update_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="ck_partners_status"),
        sa.PrimaryKeyConstraint("partner_id"),
        sa.UniqueConstraint("programme_currency_code"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.Column("revoke_time_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
        ),
        sa.PrimaryKeyConstraint("key_id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index(op.f("ix_api_keys_partner_id"), "api_keys", ["partner_id"], unique=False)
    op.create_table(
        "conversion_quotes",
        sa.Column("quote_id", sa.String(length=64), nullable=False),
        sa.Column("caller_id", sa.String(length=32), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("from_currency", sa.String(length=16), nullable=False),
        sa.Column("to_currency", sa.String(length=16), nullable=False),
        sa.Column("from_amount", sa.BigInteger(), nullable=False),
        sa.Column("base_to_amount", sa.BigInteger(), nullable=False),
        sa.Column("bonus_to_amount", sa.BigInteger(), nullable=False),
        sa.Column("rounded_down_to_amount", sa.String(length=40), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("from_units", sa.BigInteger(), nullable=False),
        sa.Column("to_units", sa.BigInteger(), nullable=False),
        sa.Column("annual_remaining_from_amount", sa.BigInteger(), nullable=False),
        sa.Column("expire_time_us", sa.BigInteger(), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("from_amount > 0 AND base_to_amount + bonus_to_amount > 0", name="ck_quotes_amounts"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
        ),
        sa.PrimaryKeyConstraint("quote_id"),
    )
    op.create_table(
        "earn_rules",
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("currency_code", sa.String(length=16), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("base_rate", sa.String(length=40), nullable=False),
        sa.Column("category_multipliers", sa.Text(), nullable=False),
        sa.Column("excluded_categories", sa.Text(), nullable=False),
        sa.Column("promotion", sa.Text(), nullable=True),
        sa.Column("cap_points", sa.BigInteger(), nullable=False),
        sa.Column("valid_from_us", sa.BigInteger(), nullable=False),
        sa.Column("valid_to_us", sa.BigInteger(), nullable=True),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("cap_points >= 0", name="ck_earn_rules_cap"),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
        ),
        sa.PrimaryKeyConstraint("partner_id", "version"),
    )
    op.create_table(
        "earns",
        sa.Column("earn_id", sa.String(length=128), nullable=False),
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("currency_code", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("exact_points", sa.String(length=80), nullable=False),
        sa.Column("bonus_points", sa.BigInteger(), nullable=False),
        sa.Column("promotion_applied", sa.Boolean(), nullable=False),
        sa.Column("capped", sa.Boolean(), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("occur_time_us", sa.BigInteger(), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'posted')", name="ck_earns_state"),
        sa.CheckConstraint("points >= 0", name="ck_earns_points"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
        ),
        sa.PrimaryKeyConstraint("earn_id"),
        sa.UniqueConstraint("partner_id", "receipt_id", name="uq_earns_receipt"),
        sa.UniqueConstraint("partner_id", "request_id", name="uq_earns_request"),
    )
    op.create_index(op.f("ix_earns_member_id"), "earns", ["member_id"], unique=False)
    op.create_table(
        "member_aliases",
        sa.Column("alias_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
        ),
        sa.PrimaryKeyConstraint("alias_hash"),
    )
    op.create_index(op.f("ix_member_aliases_member_id"), "member_aliases", ["member_id"], unique=False)
    op.create_table(
        "member_wallets",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("currency_code", sa.String(length=16), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
        ),
        sa.PrimaryKeyConstraint("member_id", "currency_code"),
    )
    op.create_table(
        "redemptions",
        sa.Column("redemption_id", sa.String(length=128), nullable=False),
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("currency_code", sa.String(length=16), nullable=False),
        sa.Column("held_amount", sa.BigInteger(), nullable=False),
        sa.Column("captured_amount", sa.BigInteger(), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("capture_transfer_id", sa.String(length=128), nullable=True),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("expire_time_us", sa.BigInteger(), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "captured_amount >= 0 AND captured_amount <= held_amount AND refunded_amount >= 0"
            " AND refunded_amount <= captured_amount",
            name="ck_redemptions_amounts",
        ),
        sa.CheckConstraint("held_amount > 0", name="ck_redemptions_held"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
        ),
        sa.PrimaryKeyConstraint("redemption_id"),
        sa.UniqueConstraint("partner_id", "request_id", name="uq_redemptions_request"),
    )
    op.create_index("ix_redemptions_receipt", "redemptions", ["partner_id", "receipt_id"], unique=False)
    op.create_table(
        "returns",
        sa.Column("return_id", sa.String(length=128), nullable=False),
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("receipt_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("earn_id", sa.String(length=128), nullable=True),
        sa.Column("currency_code", sa.String(length=16), nullable=False),
        sa.Column("earned_points_due", sa.BigInteger(), nullable=False),
        sa.Column("earned_points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("refunds", sa.Text(), nullable=False),
        sa.Column("refund_currency_code", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "earned_points_reversed >= 0 AND earned_points_reversed <= earned_points_due",
            name="ck_returns_points",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
        ),
        sa.PrimaryKeyConstraint("return_id"),
        sa.UniqueConstraint("partner_id", "request_id", name="uq_returns_request"),
    )
    op.create_table(
        "stores",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.partner_id"],
        ),
        sa.PrimaryKeyConstraint("store_id"),
    )
    op.create_index(op.f("ix_stores_partner_id"), "stores", ["partner_id"], unique=False)
    op.create_table(
        "conversions",
        sa.Column("conversion_id", sa.String(length=128), nullable=False),
        sa.Column("caller_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("quote_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("from_currency", sa.String(length=16), nullable=False),
        sa.Column("to_currency", sa.String(length=16), nullable=False),
        sa.Column("from_amount", sa.BigInteger(), nullable=False),
        sa.Column("to_amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.String(length=64), nullable=True),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'completed', 'failed')", name="ck_conversions_state"),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.member_id"],
        ),
        sa.ForeignKeyConstraint(
            ["quote_id"],
            ["conversion_quotes.quote_id"],
        ),
        sa.PrimaryKeyConstraint("conversion_id"),
        sa.UniqueConstraint("caller_id", "request_id", name="uq_conversions_request"),
        sa.UniqueConstraint("quote_id"),
    )
    op.create_index(
        "ix_conversions_member",
        "conversions",
        ["member_id", "from_currency", "to_currency", "create_time_us"],
        unique=False,
    )
    op.create_table(
        "earn_lines",
        sa.Column("earn_id", sa.String(length=128), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("exact_points", sa.String(length=80), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("return_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint("points >= 0", name="ck_earn_lines_points"),
        sa.ForeignKeyConstraint(
            ["earn_id"],
            ["earns.earn_id"],
        ),
        sa.PrimaryKeyConstraint("earn_id", "line_number"),
    )
    op.create_table(
        "terminals",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=64), nullable=False),
        sa.Column("create_time_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["stores.store_id"],
        ),
        sa.PrimaryKeyConstraint("store_id", "terminal_id"),
    )


def downgrade() -> None:
    op.drop_table("terminals")
    op.drop_table("earn_lines")
    op.drop_index("ix_conversions_member", table_name="conversions")
    op.drop_table("conversions")
    op.drop_index(op.f("ix_stores_partner_id"), table_name="stores")
    op.drop_table("stores")
    op.drop_table("returns")
    op.drop_index("ix_redemptions_receipt", table_name="redemptions")
    op.drop_table("redemptions")
    op.drop_table("member_wallets")
    op.drop_index(op.f("ix_member_aliases_member_id"), table_name="member_aliases")
    op.drop_table("member_aliases")
    op.drop_index(op.f("ix_earns_member_id"), table_name="earns")
    op.drop_table("earns")
    op.drop_table("earn_rules")
    op.drop_table("conversion_quotes")
    op.drop_index(op.f("ix_api_keys_partner_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("partners")
    op.drop_table("members")
    op.drop_table("conversion_rules")
