"""Earn rules and conversion rules, versioned; rows to domain rules and back."""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy import Connection, Row, and_, func, insert, select

from services.partners import converting, earn_pricing
from services.partners.store.tables import conversion_rules, earn_rules


def earn_rule_from_row(row: Row) -> earn_pricing.EarnRule:
    promotion = None
    if row.promotion:
        data = json.loads(row.promotion)
        promotion = earn_pricing.Promotion(
            kind=data["kind"],
            start_micros=data["start_us"],
            end_micros=data["end_us"],
            multiplier=Decimal(data["multiplier"]),
            bonus_points=data["bonus_points"],
            threshold_amount=data["threshold_amount"],
        )
    return earn_pricing.EarnRule(
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


def earn_rule_values(rule: earn_pricing.EarnRule, now_us: int) -> dict:
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


def get_earn_rule(connection: Connection, partner_id: str, version: int) -> earn_pricing.EarnRule | None:
    query = select(earn_rules).where(and_(earn_rules.c.partner_id == partner_id, earn_rules.c.version == version))
    row = connection.execute(query).first()
    return None if row is None else earn_rule_from_row(row)


def earn_rules_of(connection: Connection, partner_id: str, limit: int = 100) -> list[earn_pricing.EarnRule]:
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


def conversion_rule_from_row(row: Row) -> converting.ConversionRule:
    return converting.ConversionRule(
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
) -> converting.ConversionRule | None:
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


def insert_conversion_rule(connection: Connection, rule: converting.ConversionRule, now_us: int) -> None:
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


def insert_earn_rule(connection: Connection, **values: object) -> None:
    connection.execute(insert(earn_rules).values(**values))
