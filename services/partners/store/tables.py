"""The partners service's tables (SQLAlchemy Core). Value lives in the ledger; these tables
hold who the partners and members are, the rules, and what each request did, so retries
return the first outcome. Alembic migrations under migrations/ create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()


# The states in which the recovery pass may still have to finish a row (store/recovery.py).
UNFINISHED_STATES = {
    "earns": ("pending",),
    "returns": ("new", "pending"),
    "conversions": ("pending",),
    "redemptions": ("authorized",),
}


def unfinished_predicate(table: str):
    """`state IN (...)` for a table's unfinished states, as its recovery index is declared."""
    return text("state IN ({})".format(", ".join(f"'{state}'" for state in UNFINISHED_STATES[table])))


def recovery_columns(table: str) -> tuple:
    """Every row the recovery pass may have to finish carries how often the pass tried it and
    when it may try again (services/partners/recovery.py), so one row that keeps failing
    waits behind the others instead of stalling them. The pass's index holds unfinished rows
    only: it stays as small as the backlog, and a row that is finished (an earn posted, a hold
    captured) leaves it rather than being written to it again under its new state."""
    unfinished = unfinished_predicate(table)
    return (
        Column("recovery_attempts", Integer, nullable=False, server_default="0"),
        Column("next_recovery_us", BigInteger, nullable=False, server_default="0"),
        Index(f"ix_{table}_unfinished", "next_recovery_us", sqlite_where=unfinished, postgresql_where=unfinished),
    )


partners = Table(
    "partners",
    metadata,
    Column("partner_id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("programme_currency_code", String(16), nullable=True, unique=True),
    Column("status", String(16), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'suspended')", name="ck_partners_status"),
)

stores = Table(
    "stores",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("partner_id", String(32), ForeignKey("partners.partner_id"), nullable=False, index=True),
    Column("display_name", String(200), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)

terminals = Table(
    "terminals",
    metadata,
    Column("store_id", String(64), ForeignKey("stores.store_id"), primary_key=True),
    Column("terminal_id", String(64), primary_key=True),
    Column("create_time_us", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(40), primary_key=True),
    Column("partner_id", String(32), ForeignKey("partners.partner_id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("create_time_us", BigInteger, nullable=False),
    Column("revoke_time_us", BigInteger, nullable=True),
    # The key's last KEY_HINT_LENGTH characters, so an operator can tell keys apart (empty for
    # keys issued before 0009); the key a rotation issued in this one's place.
    Column("key_hint", String(8), nullable=False, server_default=""),
    Column("replaced_by_key_id", String(40), nullable=True),
)

earn_rules = Table(
    "earn_rules",
    metadata,
    Column("partner_id", String(32), ForeignKey("partners.partner_id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("currency_code", String(16), nullable=False),
    Column("basis", String(16), nullable=False),
    Column("base_rate", String(40), nullable=False),
    Column("category_multipliers", Text, nullable=False),  # JSON object category -> decimal string
    Column("excluded_categories", Text, nullable=False),  # JSON array
    Column("promotion", Text, nullable=True),  # JSON object
    Column("cap_points", BigInteger, nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_to_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    CheckConstraint("cap_points >= 0", name="ck_earn_rules_cap"),
)

conversion_rules = Table(
    "conversion_rules",
    metadata,
    Column("from_currency", String(16), primary_key=True),
    Column("to_currency", String(16), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("from_units", BigInteger, nullable=False),
    Column("to_units", BigInteger, nullable=False),
    Column("bonus_block_from_amount", BigInteger, nullable=False),
    Column("bonus_to_amount", BigInteger, nullable=False),
    Column("min_from_amount", BigInteger, nullable=False),
    Column("step_from_amount", BigInteger, nullable=False),
    Column("max_from_amount", BigInteger, nullable=False),
    Column("annual_cap_from_amount", BigInteger, nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_to_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    CheckConstraint("from_units > 0 AND to_units > 0", name="ck_conversion_rules_ratio"),
)

# What an admin request created, so a retry (same caller, operation and request_id) returns
# it instead of creating another rule version or key. `content` is the request's canonical
# JSON, compared field by field to name what a reused request_id changed.
admin_requests = Table(
    "admin_requests",
    metadata,
    Column("caller_id", String(32), primary_key=True),
    Column("operation", String(32), primary_key=True),
    Column("request_id", String(64), primary_key=True),
    Column("content", Text, nullable=False),
    Column("result_id", String(128), nullable=False),  # key_id, or the rule version
    # An issued key's secret sealed with a server secret, kept for the retry window only.
    Column("sealed_secret", String(256), nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    CheckConstraint(
        "operation IN ('create_earn_rule', 'create_conversion_rule', 'issue_api_key', 'rotate_api_key')",
        name="ck_admin_requests_operation",
    ),
)

members = Table(
    "members",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("enroll_caller_id", String(32), nullable=False),
    Column("enroll_request_id", String(64), nullable=False),
    Column("enroll_fingerprint", String(64), nullable=True),  # NULL before migration 0003
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("enroll_caller_id", "enroll_request_id", name="uq_members_enroll_request"),
)

member_aliases = Table(
    "member_aliases",
    metadata,
    Column("alias_hash", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("member_id", String(64), ForeignKey("members.member_id"), nullable=False, index=True),
    Column("create_time_us", BigInteger, nullable=False),
)

member_wallets = Table(
    "member_wallets",
    metadata,
    Column("member_id", String(64), ForeignKey("members.member_id"), primary_key=True),
    Column("currency_code", String(16), primary_key=True),
    Column("create_time_us", BigInteger, nullable=False),
)

earns = Table(
    "earns",
    metadata,
    Column("earn_id", String(128), primary_key=True),
    Column("partner_id", String(32), ForeignKey("partners.partner_id"), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("receipt_id", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("member_id", String(64), ForeignKey("members.member_id"), nullable=False, index=True),
    Column("currency_code", String(16), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("exact_points", String(80), nullable=False),
    Column("bonus_points", BigInteger, nullable=False),
    Column("promotion_applied", Boolean, nullable=False),
    Column("capped", Boolean, nullable=False),
    Column("rule_version", Integer, nullable=False),
    # The tier the earn was priced at (migration 0008): its name ("" when the currency has no
    # tiers, and then nothing qualified), multiplier (decimal string) and the part of `points`
    # above the earn rule's, which is not qualifying. Qualifying points = points - tier_bonus_points.
    Column("tier_name", String(64), nullable=False, server_default=""),
    Column("tier_multiplier", String(40), nullable=False, server_default="1"),
    Column("tier_bonus_points", BigInteger, nullable=False, server_default="0"),
    # The month its qualifying points were counted in (tiers.month_of), so a refused earn takes
    # them back from there.
    Column("tier_month", Integer, nullable=False, server_default="0"),
    Column("state", String(16), nullable=False),
    Column("failure_reason", String(64), nullable=True),  # why the ledger refused a failed earn
    *recovery_columns("earns"),
    Column("occur_time_us", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "request_id", name="uq_earns_request"),
    # A receipt is earned at most once, refused earns aside: a refused earn uses up nothing.
    Index(
        "uq_earns_receipt",
        "partner_id",
        "receipt_id",
        unique=True,
        sqlite_where=text("state <> 'failed'"),
        postgresql_where=text("state <> 'failed'"),
    ),
    # The refused earns of a receipt, for a return of it (small: refusals are rare).
    Index(
        "ix_earns_refused_receipt",
        "partner_id",
        "receipt_id",
        sqlite_where=text("state = 'failed'"),
        postgresql_where=text("state = 'failed'"),
    ),
    CheckConstraint("points >= 0", name="ck_earns_points"),
    CheckConstraint("state IN ('pending', 'posted', 'failed')", name="ck_earns_state"),
)

earn_lines = Table(
    "earn_lines",
    metadata,
    Column("earn_id", String(128), ForeignKey("earns.earn_id"), primary_key=True),
    Column("line_number", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("category", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("exact_points", String(80), nullable=False),
    Column("excluded", Boolean, nullable=False),
    # The line's share of the earn's tier bonus (part of `points`), so a return reverses exactly it.
    Column("tier_bonus_points", BigInteger, nullable=False, server_default="0"),
    Column("return_id", String(128), nullable=True),
    CheckConstraint("points >= 0", name="ck_earn_lines_points"),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("redemption_id", String(128), primary_key=True),
    Column("partner_id", String(32), ForeignKey("partners.partner_id"), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("receipt_id", String(64), nullable=False),
    Column("store_id", String(64), nullable=False),
    Column("terminal_id", String(64), nullable=False),
    Column("member_id", String(64), ForeignKey("members.member_id"), nullable=False),
    Column("currency_code", String(16), nullable=False),
    Column("held_amount", BigInteger, nullable=False),
    Column("captured_amount", BigInteger, nullable=False, default=0),
    Column("refunded_amount", BigInteger, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("capture_transfer_id", String(128), nullable=True),
    Column("failure_reason", String(64), nullable=True),
    Column("expire_time_us", BigInteger, nullable=False),
    *recovery_columns("redemptions"),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "request_id", name="uq_redemptions_request"),
    Index("ix_redemptions_receipt", "partner_id", "receipt_id"),
    CheckConstraint("held_amount > 0", name="ck_redemptions_held"),
    CheckConstraint(
        "captured_amount >= 0 AND captured_amount <= held_amount AND refunded_amount >= 0"
        " AND refunded_amount <= captured_amount",
        name="ck_redemptions_amounts",
    ),
)

returns = Table(
    "returns",
    metadata,
    Column("return_id", String(128), primary_key=True),
    Column("partner_id", String(32), ForeignKey("partners.partner_id"), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("receipt_id", String(64), nullable=False),
    Column("member_id", String(64), nullable=False),
    Column("earn_id", String(128), nullable=True),
    Column("store_id", String(64), nullable=False, server_default=""),
    Column("terminal_id", String(64), nullable=False, server_default=""),
    Column("currency_code", String(16), nullable=False),
    Column("earned_points_due", BigInteger, nullable=False),
    Column("earned_points_reversed", BigInteger, nullable=False),
    # Of earned_points_due: the returned lines' tier bonus; and what the return took off the
    # member's qualifying totals (base points, and 1 activity for a whole basket), given back if
    # the ledger refuses the return (migration 0008).
    Column("tier_bonus_points_due", BigInteger, nullable=False, server_default="0"),
    Column("qualifying_points_due", BigInteger, nullable=False, server_default="0"),
    Column("qualifying_activities_due", Integer, nullable=False, server_default="0"),
    Column("refunds", Text, nullable=False),  # JSON [[redemption_id, points, currency_code], ...]
    Column("refund_currency_code", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # new, pending, posted, failed
    Column("failure_reason", String(64), nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "request_id", name="uq_returns_request"),
    *recovery_columns("returns"),
    CheckConstraint(
        "earned_points_reversed >= 0 AND earned_points_reversed <= earned_points_due",
        name="ck_returns_points",
    ),
)

conversion_quotes = Table(
    "conversion_quotes",
    metadata,
    Column("quote_id", String(64), primary_key=True),
    Column("caller_id", String(32), nullable=False),
    Column("member_id", String(64), ForeignKey("members.member_id"), nullable=False),
    Column("from_currency", String(16), nullable=False),
    Column("to_currency", String(16), nullable=False),
    Column("from_amount", BigInteger, nullable=False),
    Column("base_to_amount", BigInteger, nullable=False),
    Column("bonus_to_amount", BigInteger, nullable=False),
    Column("rounded_down_to_amount", String(40), nullable=False),
    Column("rule_version", Integer, nullable=False),
    Column("from_units", BigInteger, nullable=False),
    Column("to_units", BigInteger, nullable=False),
    Column("annual_remaining_from_amount", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    CheckConstraint("from_amount > 0 AND base_to_amount + bonus_to_amount > 0", name="ck_quotes_amounts"),
)

conversions = Table(
    "conversions",
    metadata,
    Column("conversion_id", String(128), primary_key=True),
    Column("caller_id", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("quote_id", String(64), ForeignKey("conversion_quotes.quote_id"), nullable=False, unique=True),
    Column("member_id", String(64), ForeignKey("members.member_id"), nullable=False),
    Column("from_currency", String(16), nullable=False),
    Column("to_currency", String(16), nullable=False),
    Column("from_amount", BigInteger, nullable=False),
    Column("to_amount", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("failure_reason", String(64), nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("caller_id", "request_id", name="uq_conversions_request"),
    *recovery_columns("conversions"),
    Index("ix_conversions_member", "member_id", "from_currency", "to_currency", "create_time_us"),
    CheckConstraint("state IN ('pending', 'completed', 'failed')", name="ck_conversions_state"),
)

# Tier definition versions per programme currency (services/partners/tiers.py), by effective time.
tier_definitions = Table(
    "tier_definitions",
    metadata,
    Column("currency_code", String(16), primary_key=True),
    Column("effective_from_us", BigInteger, primary_key=True),
    Column("measure", String(32), nullable=False),
    Column("window", String(32), nullable=False),
    Column("grace_months", Integer, nullable=False),
    Column("levels", Text, nullable=False),  # JSON [{"name", "threshold", "multiplier" (decimal string)}, ...]
    Column("create_time_us", BigInteger, nullable=False),
    CheckConstraint("grace_months >= 0", name="ck_tier_definitions_grace"),
)

# A member's tier in a currency with tiers: the level (position in the definition's levels),
# since when, the anchor of its next evaluation, and the qualifying totals per month. Locked
# (FOR UPDATE, in member and currency order) by the earns that change it.
member_tiers = Table(
    "member_tiers",
    metadata,
    Column("member_id", String(64), ForeignKey("members.member_id"), primary_key=True),
    Column("currency_code", String(16), primary_key=True),
    Column("level", Integer, nullable=False),
    Column("since_us", BigInteger, nullable=False),
    Column("anchor_us", BigInteger, nullable=False),
    Column("qualifying_months", Text, nullable=False),  # JSON {"<month>": [points, activities]}
    Column("update_time_us", BigInteger, nullable=False),
    CheckConstraint("level >= 0", name="ck_member_tiers_level"),
)
