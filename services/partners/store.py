"""Tables and queries of the partners service (SQLAlchemy Core). Value lives in the ledger;
these tables hold who the partners and members are, the rules, and what each request did,
so retries return the first outcome."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    func,
    insert,
    select,
    tuple_,
    update,
)

from services.partners import model

metadata = MetaData()

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
    Column("state", String(16), nullable=False),
    Column("failure_reason", String(64), nullable=True),  # why the ledger refused a failed earn
    Column("occur_time_us", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "request_id", name="uq_earns_request"),
    UniqueConstraint("partner_id", "receipt_id", name="uq_earns_receipt"),
    Index("ix_earns_state", "state", "create_time_us"),
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
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "request_id", name="uq_redemptions_request"),
    Index("ix_redemptions_receipt", "partner_id", "receipt_id"),
    Index("ix_redemptions_state", "state", "expire_time_us"),
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
    Column("refunds", Text, nullable=False),  # JSON [[redemption_id, points, currency_code], ...]
    Column("refund_currency_code", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # new, pending, posted, failed
    Column("failure_reason", String(64), nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    UniqueConstraint("partner_id", "request_id", name="uq_returns_request"),
    Index("ix_returns_state", "state", "create_time_us"),
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
    Index("ix_conversions_member", "member_id", "from_currency", "to_currency", "create_time_us"),
    Index("ix_conversions_state", "state", "create_time_us"),
    CheckConstraint("state IN ('pending', 'completed', 'failed')", name="ck_conversions_state"),
)


# ---- partners, stores, terminals, keys ----
def get_partner(connection: Connection, partner_id: str) -> Row | None:
    return connection.execute(select(partners).where(partners.c.partner_id == partner_id)).first()


def list_partners(connection: Connection, after_id: str, limit: int) -> Sequence[Row]:
    query = select(partners).where(partners.c.partner_id > after_id).order_by(partners.c.partner_id)
    return connection.execute(query.limit(limit)).all()


def partner_by_currency(connection: Connection, currency_code: str) -> Row | None:
    query = select(partners).where(partners.c.programme_currency_code == currency_code)
    return connection.execute(query).first()


def set_partner_status(connection: Connection, partner_id: str, status: str, now_us: int) -> None:
    connection.execute(
        update(partners).where(partners.c.partner_id == partner_id).values(status=status, update_time_us=now_us)
    )


def get_store(connection: Connection, store_id: str) -> Row | None:
    return connection.execute(select(stores).where(stores.c.store_id == store_id)).first()


def get_terminal(connection: Connection, store_id: str, terminal_id: str) -> Row | None:
    query = select(terminals).where(and_(terminals.c.store_id == store_id, terminals.c.terminal_id == terminal_id))
    return connection.execute(query).first()


def partner_of_key(connection: Connection, key_hash: str) -> Row | None:
    """The active key and its partner's status, or None for an unknown or revoked key."""
    query = (
        select(api_keys.c.key_id, api_keys.c.partner_id, partners.c.status, partners.c.programme_currency_code)
        .join(partners, partners.c.partner_id == api_keys.c.partner_id)
        .where(and_(api_keys.c.key_hash == key_hash, api_keys.c.revoke_time_us.is_(None)))
    )
    return connection.execute(query).first()


def get_api_key(connection: Connection, key_id: str) -> Row | None:
    return connection.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()


def revoke_api_key(connection: Connection, key_id: str, now_us: int) -> None:
    connection.execute(
        update(api_keys)
        .where(and_(api_keys.c.key_id == key_id, api_keys.c.revoke_time_us.is_(None)))
        .values(revoke_time_us=now_us)
    )


# ---- rules ----
def earn_rule_from_row(row: Row) -> model.EarnRule:
    promotion = None
    if row.promotion:
        data = json.loads(row.promotion)
        promotion = model.Promotion(
            kind=data["kind"],
            start_micros=data["start_us"],
            end_micros=data["end_us"],
            multiplier=Decimal(data["multiplier"]),
            bonus_points=data["bonus_points"],
            threshold_amount=data["threshold_amount"],
        )
    return model.EarnRule(
        partner_id=row.partner_id,
        version=row.version,
        currency_code=row.currency_code,
        basis=row.basis,
        base_rate=Decimal(row.base_rate),
        category_multipliers={key: Decimal(value) for key, value in json.loads(row.category_multipliers).items()},
        excluded_categories=frozenset(json.loads(row.excluded_categories)),
        promotion=promotion,
        cap_points=row.cap_points,
        valid_from_micros=row.valid_from_us,
        valid_to_micros=row.valid_to_us,
    )


def earn_rule_values(rule: model.EarnRule, now_us: int) -> dict:
    promotion = rule.promotion
    return dict(
        partner_id=rule.partner_id,
        version=rule.version,
        currency_code=rule.currency_code,
        basis=rule.basis,
        base_rate=str(rule.base_rate),
        category_multipliers=json.dumps({key: str(value) for key, value in sorted(rule.category_multipliers.items())}),
        excluded_categories=json.dumps(sorted(rule.excluded_categories)),
        promotion=None
        if promotion is None
        else json.dumps(
            dict(
                kind=promotion.kind,
                start_us=promotion.start_micros,
                end_us=promotion.end_micros,
                multiplier=str(promotion.multiplier),
                bonus_points=promotion.bonus_points,
                threshold_amount=promotion.threshold_amount,
            )
        ),
        cap_points=rule.cap_points,
        valid_from_us=rule.valid_from_micros,
        valid_to_us=rule.valid_to_micros,
        create_time_us=now_us,
    )


def get_earn_rule(connection: Connection, partner_id: str, version: int) -> model.EarnRule | None:
    query = select(earn_rules).where(and_(earn_rules.c.partner_id == partner_id, earn_rules.c.version == version))
    row = connection.execute(query).first()
    return None if row is None else earn_rule_from_row(row)


def earn_rules_of(connection: Connection, partner_id: str, limit: int = 100) -> list[model.EarnRule]:
    query = (
        select(earn_rules)
        .where(earn_rules.c.partner_id == partner_id)
        .order_by(earn_rules.c.version.desc())
        .limit(limit)
    )
    return [earn_rule_from_row(row) for row in connection.execute(query)]


def next_earn_rule_version(connection: Connection, partner_id: str) -> int:
    query = select(func.coalesce(func.max(earn_rules.c.version), 0)).where(earn_rules.c.partner_id == partner_id)
    return int(connection.execute(query).scalar_one()) + 1


def conversion_rule_from_row(row: Row) -> model.ConversionRule:
    return model.ConversionRule(
        from_currency=row.from_currency,
        to_currency=row.to_currency,
        version=row.version,
        from_units=row.from_units,
        to_units=row.to_units,
        bonus_block_from_amount=row.bonus_block_from_amount,
        bonus_to_amount=row.bonus_to_amount,
        min_from_amount=row.min_from_amount,
        step_from_amount=row.step_from_amount,
        max_from_amount=row.max_from_amount,
        annual_cap_from_amount=row.annual_cap_from_amount,
        valid_from_micros=row.valid_from_us,
        valid_to_micros=row.valid_to_us,
    )


def conversion_rules_of(connection: Connection, from_currency: str | None = None, to_currency: str | None = None):
    query = select(conversion_rules).order_by(
        conversion_rules.c.from_currency, conversion_rules.c.to_currency, conversion_rules.c.version
    )
    if from_currency is not None:
        query = query.where(
            and_(
                conversion_rules.c.from_currency == from_currency,
                conversion_rules.c.to_currency == to_currency,
            )
        )
    return [conversion_rule_from_row(row) for row in connection.execute(query)]


def get_conversion_rule(
    connection: Connection, from_currency: str, to_currency: str, version: int
) -> model.ConversionRule | None:
    query = select(conversion_rules).where(
        and_(
            conversion_rules.c.from_currency == from_currency,
            conversion_rules.c.to_currency == to_currency,
            conversion_rules.c.version == version,
        )
    )
    row = connection.execute(query).first()
    return None if row is None else conversion_rule_from_row(row)


def next_conversion_rule_version(connection: Connection, from_currency: str, to_currency: str) -> int:
    query = select(func.coalesce(func.max(conversion_rules.c.version), 0)).where(
        and_(conversion_rules.c.from_currency == from_currency, conversion_rules.c.to_currency == to_currency)
    )
    return int(connection.execute(query).scalar_one()) + 1


def insert_conversion_rule(connection: Connection, rule: model.ConversionRule, now_us: int) -> None:
    connection.execute(
        insert(conversion_rules).values(
            from_currency=rule.from_currency,
            to_currency=rule.to_currency,
            version=rule.version,
            from_units=rule.from_units,
            to_units=rule.to_units,
            bonus_block_from_amount=rule.bonus_block_from_amount,
            bonus_to_amount=rule.bonus_to_amount,
            min_from_amount=rule.min_from_amount,
            step_from_amount=rule.step_from_amount,
            max_from_amount=rule.max_from_amount,
            annual_cap_from_amount=rule.annual_cap_from_amount,
            valid_from_us=rule.valid_from_micros,
            valid_to_us=rule.valid_to_micros,
            create_time_us=now_us,
        )
    )


# ---- admin requests ----
def admin_request(connection: Connection, caller_id: str, operation: str, request_id: str) -> Row | None:
    query = select(admin_requests).where(
        and_(
            admin_requests.c.caller_id == caller_id,
            admin_requests.c.operation == operation,
            admin_requests.c.request_id == request_id,
        )
    )
    return connection.execute(query).first()


def insert_admin_request(connection: Connection, **values: object) -> None:
    connection.execute(insert(admin_requests).values(**values))


def forget_sealed_secrets(connection: Connection, created_before_us: int) -> None:
    """Past the retry window a key's secret is gone for good, sealed or not."""
    connection.execute(
        update(admin_requests)
        .where(and_(admin_requests.c.sealed_secret.is_not(None), admin_requests.c.create_time_us < created_before_us))
        .values(sealed_secret=None)
    )


# ---- members ----
def get_member(connection: Connection, member_id: str) -> Row | None:
    return connection.execute(select(members).where(members.c.member_id == member_id)).first()


def lock_member(connection: Connection, member_id: str) -> Row | None:
    """Serialises a member's conversions (annual cap) on PostgreSQL; SQLite already holds its write lock."""
    return connection.execute(select(members).where(members.c.member_id == member_id).with_for_update()).first()


def member_by_enrolment(connection: Connection, caller_id: str, request_id: str) -> Row | None:
    query = select(members).where(
        and_(members.c.enroll_caller_id == caller_id, members.c.enroll_request_id == request_id)
    )
    return connection.execute(query).first()


def member_by_alias(connection: Connection, alias_hash: str) -> Row | None:
    return connection.execute(select(member_aliases).where(member_aliases.c.alias_hash == alias_hash)).first()


def alias_count(connection: Connection, member_id: str) -> int:
    query = select(func.count()).select_from(member_aliases).where(member_aliases.c.member_id == member_id)
    return int(connection.execute(query).scalar_one())


def wallet_currencies(connection: Connection, member_id: str) -> list[str]:
    query = (
        select(member_wallets.c.currency_code)
        .where(member_wallets.c.member_id == member_id)
        .order_by(member_wallets.c.currency_code)
    )
    return list(connection.execute(query).scalars())


def has_wallet(connection: Connection, member_id: str, currency_code: str) -> bool:
    query = select(member_wallets.c.member_id).where(
        and_(member_wallets.c.member_id == member_id, member_wallets.c.currency_code == currency_code)
    )
    return connection.execute(query).first() is not None


# ---- earns ----
def earn_by_request(connection: Connection, partner_id: str, request_id: str) -> Row | None:
    query = select(earns).where(and_(earns.c.partner_id == partner_id, earns.c.request_id == request_id))
    return connection.execute(query).first()


def earn_by_receipt(connection: Connection, partner_id: str, receipt_id: str) -> Row | None:
    query = select(earns).where(and_(earns.c.partner_id == partner_id, earns.c.receipt_id == receipt_id))
    return connection.execute(query).first()


def lock_receipt(connection: Connection, partner_id: str, receipt_id: str) -> tuple[Row | None, list[Row]]:
    """The earn of a receipt and its redemptions, locked (FOR UPDATE) for the rest of the
    transaction, always in the same order: the earn row first, then the redemptions by id.
    Every return of the receipt takes these locks before it reads which lines and points are
    still unreturned, so two concurrent returns are serialized and the second sees the first.
    Rows are returned as they are after the lock (READ COMMITTED re-reads a waited-for row).
    On SQLite FOR UPDATE is not rendered; the writer's BEGIN IMMEDIATE already serializes."""
    earn = connection.execute(
        select(earns).where(and_(earns.c.partner_id == partner_id, earns.c.receipt_id == receipt_id)).with_for_update()
    ).first()
    rows = connection.execute(
        select(redemptions)
        .where(and_(redemptions.c.partner_id == partner_id, redemptions.c.receipt_id == receipt_id))
        .order_by(redemptions.c.redemption_id)
        .with_for_update()
    ).all()
    return earn, sorted(rows, key=lambda row: (row.create_time_us, row.redemption_id))


def reserve_lines(connection: Connection, earn_id: str, line_numbers: Sequence[int], return_id: str) -> bool:
    """Claim unreturned lines for a return; False (nothing changed) if any was claimed already."""
    result = connection.execute(
        update(earn_lines)
        .where(and_(earn_lines.c.earn_id == earn_id, earn_lines.c.line_number.in_(list(line_numbers))))
        .where(earn_lines.c.return_id.is_(None))
        .values(return_id=return_id)
    )
    return result.rowcount == len(line_numbers)


def reserve_refund(connection: Connection, redemption_id: str, amount: int) -> bool:
    """Add to a redemption's refunded amount, only while it stays within what was captured."""
    result = connection.execute(
        update(redemptions)
        .where(redemptions.c.redemption_id == redemption_id)
        .where(redemptions.c.refunded_amount + amount <= redemptions.c.captured_amount)
        .values(refunded_amount=redemptions.c.refunded_amount + amount)
    )
    return result.rowcount == 1


def earn_lines_of(connection: Connection, earn_id: str) -> Sequence[Row]:
    query = select(earn_lines).where(earn_lines.c.earn_id == earn_id).order_by(earn_lines.c.line_number)
    return connection.execute(query).all()


def insert_earns(connection: Connection, values: list[dict]) -> list[Row]:
    """Insert earns in one statement; their rows, in the order given."""
    if not values:
        return []
    return list(connection.execute(insert(earns).returning(*earns.c, sort_by_parameter_order=True), values))


def earns_by_requests(connection: Connection, keys: set[tuple[str, str]]) -> Sequence[Row]:
    """The earns recorded under these (partner_id, request_id)."""
    return connection.execute(select(earns).where(tuple_(earns.c.partner_id, earns.c.request_id).in_(keys))).all()


def earns_by_receipts(connection: Connection, keys: set[tuple[str, str]]) -> Sequence[Row]:
    """The earns recorded for these (partner_id, receipt_id)."""
    return connection.execute(select(earns).where(tuple_(earns.c.partner_id, earns.c.receipt_id).in_(keys))).all()


def earns_by_id(connection: Connection, earn_ids: Sequence[str]) -> dict[str, Row]:
    rows = connection.execute(select(earns).where(earns.c.earn_id.in_(list(earn_ids)))).all()
    return {row.earn_id: row for row in rows}


def earn_lines_of_many(connection: Connection, earn_ids: Sequence[str]) -> dict[str, list[Row]]:
    query = (
        select(earn_lines)
        .where(earn_lines.c.earn_id.in_(list(earn_ids)))
        .order_by(earn_lines.c.earn_id, earn_lines.c.line_number)
    )
    found: dict[str, list[Row]] = {earn_id: [] for earn_id in earn_ids}
    for row in connection.execute(query):
        found[row.earn_id].append(row)
    return found


def mark_earns_posted(connection: Connection, earn_ids: Sequence[str]) -> None:
    connection.execute(update(earns).where(earns.c.earn_id.in_(list(earn_ids))).values(state="posted"))


def mark_earn_failed(connection: Connection, earn_id: str, reason: str) -> None:
    """Only a pending earn fails: one the client's retry already posted stays posted."""
    connection.execute(
        update(earns)
        .where(and_(earns.c.earn_id == earn_id, earns.c.state == "pending"))
        .values(state="failed", failure_reason=reason)
    )


def pending_earns(connection: Connection, created_before_us: int, limit: int) -> Sequence[Row]:
    """Earns recorded but not yet posted to the ledger, oldest first."""
    query = (
        select(earns)
        .where(and_(earns.c.state == "pending", earns.c.create_time_us < created_before_us))
        .order_by(earns.c.create_time_us, earns.c.earn_id)
        .limit(limit)
    )
    return connection.execute(query).all()


# ---- redemptions ----
def get_redemption(connection: Connection, redemption_id: str) -> Row | None:
    return connection.execute(select(redemptions).where(redemptions.c.redemption_id == redemption_id)).first()


def redemption_by_request(connection: Connection, partner_id: str, request_id: str) -> Row | None:
    query = select(redemptions).where(
        and_(redemptions.c.partner_id == partner_id, redemptions.c.request_id == request_id)
    )
    return connection.execute(query).first()


def redemptions_of_receipt(connection: Connection, partner_id: str, receipt_id: str) -> Sequence[Row]:
    query = (
        select(redemptions)
        .where(and_(redemptions.c.partner_id == partner_id, redemptions.c.receipt_id == receipt_id))
        .order_by(redemptions.c.create_time_us, redemptions.c.redemption_id)
    )
    return connection.execute(query).all()


def update_redemption(connection: Connection, redemption_id: str, **values: object) -> Row | None:
    """Change a redemption; the row as it is now (None if there is none)."""
    query = update(redemptions).where(redemptions.c.redemption_id == redemption_id).values(**values)
    return connection.execute(query.returning(*redemptions.c)).first()


def insert_redemption(connection: Connection, **values: object) -> Row:
    return connection.execute(insert(redemptions).values(**values).returning(*redemptions.c)).one()


def redemptions_by_requests(connection: Connection, keys: set[tuple[str, str]]) -> Sequence[Row]:
    """The redemptions recorded under these (partner_id, request_id)."""
    query = select(redemptions).where(tuple_(redemptions.c.partner_id, redemptions.c.request_id).in_(keys))
    return connection.execute(query).all()


def insert_redemptions(connection: Connection, values: list[dict]) -> list[Row]:
    """Insert redemptions in one statement; their rows, in the order given."""
    if not values:
        return []
    query = insert(redemptions).returning(*redemptions.c, sort_by_parameter_order=True)
    return list(connection.execute(query, values))


def settle_holds(connection: Connection, authorized: dict[str, int], failed: dict[str, str]) -> dict[str, Row]:
    """Record what the ledger answered for pending holds: authorized ones with the ledger's expiry
    time, refused ones with the reason. Only a hold still pending changes. Returns the rows."""
    pending = and_(redemptions.c.redemption_id == bindparam("id"), redemptions.c.state == "pending")
    if authorized:
        connection.execute(
            update(redemptions).where(pending).values(state="authorized", expire_time_us=bindparam("expire")),
            [{"id": redemption_id, "expire": expire} for redemption_id, expire in authorized.items()],
        )
    if failed:
        connection.execute(
            update(redemptions).where(pending).values(state="failed", failure_reason=bindparam("reason")),
            [{"id": redemption_id, "reason": reason} for redemption_id, reason in failed.items()],
        )
    ids = [*authorized, *failed]
    if not ids:
        return {}
    return {
        row.redemption_id: row
        for row in connection.execute(select(redemptions).where(redemptions.c.redemption_id.in_(ids)))
    }


def expired_authorized_redemptions(connection: Connection, expired_before_us: int, limit: int) -> Sequence[Row]:
    """Holds still recorded as authorized although their timeout passed, oldest expiry first."""
    query = (
        select(redemptions)
        .where(and_(redemptions.c.state == "authorized", redemptions.c.expire_time_us < expired_before_us))
        .order_by(redemptions.c.expire_time_us, redemptions.c.redemption_id)
        .limit(limit)
    )
    return connection.execute(query).all()


def resolve_authorized_redemption(connection: Connection, redemption_id: str, state: str) -> bool:
    """Only a hold still recorded as authorized changes: a capture or void recorded meanwhile
    by its own call (with its amount and transfer id) wins. True when this call changed it."""
    result = connection.execute(
        update(redemptions)
        .where(and_(redemptions.c.redemption_id == redemption_id, redemptions.c.state == "authorized"))
        .values(state=state)
    )
    return result.rowcount == 1


# ---- returns ----
def return_by_request(connection: Connection, partner_id: str, request_id: str) -> Row | None:
    query = select(returns).where(and_(returns.c.partner_id == partner_id, returns.c.request_id == request_id))
    return connection.execute(query).first()


def update_return(connection: Connection, return_id: str, **values: object) -> None:
    connection.execute(update(returns).where(returns.c.return_id == return_id).values(**values))


def retry_return(connection: Connection, return_id: str, attempt: int) -> None:
    """Move a return from `attempt` to the next one, to be decided again. Conditional, so a
    concurrent completion of the same return (client retry and recovery pass) never moves a
    return that already went on (or was posted) back to `new`."""
    connection.execute(
        update(returns)
        .where(and_(returns.c.return_id == return_id, returns.c.state == "pending", returns.c.attempt == attempt))
        .values(state="new", attempt=attempt + 1, earned_points_reversed=0)
    )


def unfinished_returns(connection: Connection, created_before_us: int, limit: int) -> Sequence[Row]:
    """Returns recorded (lines and refunds reserved) but not yet posted or failed, oldest first."""
    query = (
        select(returns)
        .where(and_(returns.c.state.in_(("new", "pending")), returns.c.create_time_us < created_before_us))
        .order_by(returns.c.create_time_us, returns.c.return_id)
        .limit(limit)
    )
    return connection.execute(query).all()


# ---- conversions ----
def get_quote(connection: Connection, quote_id: str) -> Row | None:
    return connection.execute(select(conversion_quotes).where(conversion_quotes.c.quote_id == quote_id)).first()


def conversion_by_request(connection: Connection, caller_id: str, request_id: str) -> Row | None:
    query = select(conversions).where(
        and_(conversions.c.caller_id == caller_id, conversions.c.request_id == request_id)
    )
    return connection.execute(query).first()


def finish_conversion(connection: Connection, conversion_id: str, state: str, reason: str | None) -> None:
    """Only a pending conversion finishes: the first outcome recorded stays."""
    connection.execute(
        update(conversions)
        .where(and_(conversions.c.conversion_id == conversion_id, conversions.c.state == "pending"))
        .values(state=state, failure_reason=reason)
    )


def pending_conversions(connection: Connection, created_before_us: int, limit: int) -> Sequence[Row]:
    """Conversions recorded but whose ledger legs were never sent (or never answered), oldest first."""
    query = (
        select(conversions)
        .where(and_(conversions.c.state == "pending", conversions.c.create_time_us < created_before_us))
        .order_by(conversions.c.create_time_us, conversions.c.conversion_id)
        .limit(limit)
    )
    return connection.execute(query).all()


def conversion_by_quote(connection: Connection, quote_id: str) -> Row | None:
    return connection.execute(select(conversions).where(conversions.c.quote_id == quote_id)).first()


def converted_in_window(
    connection: Connection, member_id: str, from_currency: str, to_currency: str, start_us: int, end_us: int
) -> int:
    """Source units the member converted in this direction in [start, end), failed ones excluded."""
    query = select(func.coalesce(func.sum(conversions.c.from_amount), 0)).where(
        and_(
            conversions.c.member_id == member_id,
            conversions.c.from_currency == from_currency,
            conversions.c.to_currency == to_currency,
            conversions.c.state != "failed",
            conversions.c.create_time_us >= start_us,
            conversions.c.create_time_us < end_us,
        )
    )
    return int(connection.execute(query).scalar_one())


def conversions_of_member(connection: Connection, member_id: str, limit: int) -> Sequence[Row]:
    query = (
        select(conversions)
        .where(conversions.c.member_id == member_id)
        .order_by(conversions.c.create_time_us.desc(), conversions.c.conversion_id.desc())
        .limit(limit)
    )
    return connection.execute(query).all()
