"""Tier definitions per currency and members' tiers: rows to domain values and back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, Row, and_, bindparam, insert, select, update

from services.partners.store.tables import member_tiers, tier_definitions
from services.partners.tiers import TierDefinition, TierLevel, TierState, add_qualifying


# ---- definitions ----
def _definition_from_row(row: Row) -> TierDefinition:
    return TierDefinition(
        currency_code=row.currency_code,
        effective_from_us=row.effective_from_us,
        measure=row.measure,
        window=row.window,
        grace_months=row.grace_months,
        levels=tuple(
            TierLevel(item["name"], item["threshold"], Decimal(item["multiplier"])) for item in json.loads(row.levels)
        ),
        create_time_us=row.create_time_us,
    )


def definitions_of(connection: Connection, currency_code: str) -> list[TierDefinition]:
    """Every version of the currency's definition, oldest first ([] when it has none)."""
    query = (
        select(tier_definitions)
        .where(tier_definitions.c.currency_code == currency_code)
        .order_by(tier_definitions.c.effective_from_us)
    )
    return [_definition_from_row(row) for row in connection.execute(query)]


def all_definitions(connection: Connection, limit: int) -> list[TierDefinition]:
    query = select(tier_definitions).order_by(tier_definitions.c.currency_code, tier_definitions.c.effective_from_us)
    return [_definition_from_row(row) for row in connection.execute(query.limit(limit))]


def get_definition(connection: Connection, currency_code: str, effective_from_us: int) -> TierDefinition | None:
    query = select(tier_definitions).where(
        and_(
            tier_definitions.c.currency_code == currency_code,
            tier_definitions.c.effective_from_us == effective_from_us,
        )
    )
    row = connection.execute(query).first()
    return None if row is None else _definition_from_row(row)


def insert_definition(connection: Connection, definition: TierDefinition) -> None:
    levels = [
        {"name": level.name, "threshold": level.threshold, "multiplier": str(level.multiplier)}
        for level in definition.levels
    ]
    connection.execute(
        insert(tier_definitions).values(
            currency_code=definition.currency_code,
            effective_from_us=definition.effective_from_us,
            measure=definition.measure,
            window=definition.window,
            grace_months=definition.grace_months,
            levels=json.dumps(levels),
            create_time_us=definition.create_time_us,
        )
    )


# ---- members' tiers ----
@dataclass(slots=True)
class MemberTier:
    member_id: str
    currency_code: str
    state: TierState
    months: dict[int, tuple[int, int]]


def _member_tier_from_row(row: Row) -> MemberTier:
    months = {int(key): (value[0], value[1]) for key, value in json.loads(row.qualifying_months).items()}
    return MemberTier(row.member_id, row.currency_code, TierState(row.level, row.since_us, row.anchor_us), months)


def _months_json(months: dict[int, tuple[int, int]]) -> str:
    return json.dumps({str(month): list(value) for month, value in sorted(months.items())})


def member_tiers_of(
    connection: Connection, member_ids: Iterable[str], *, lock: bool
) -> dict[tuple[str, str], MemberTier]:
    """The tiers of these members in every currency they have one in. With `lock`, the rows are
    locked (FOR UPDATE) in member and currency order until the transaction ends (SQLite: the
    writer's BEGIN IMMEDIATE already serialises)."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    query = (
        select(member_tiers)
        .where(member_tiers.c.member_id.in_(ids))
        .order_by(member_tiers.c.member_id, member_tiers.c.currency_code)
    )
    if lock:
        query = query.with_for_update()
    return {(row.member_id, row.currency_code): _member_tier_from_row(row) for row in connection.execute(query)}


def insert_member_tiers(connection: Connection, tiers: Sequence[MemberTier], now_us: int) -> None:
    """Insert members' first tier rows (a row made meanwhile by another transaction is a unique-key
    conflict: the caller decides again with it)."""
    if tiers:
        connection.execute(insert(member_tiers), [_row_values(tier, now_us) for tier in tiers])


def _row_values(tier: MemberTier, now_us: int) -> dict:
    return dict(
        member_id=tier.member_id,
        currency_code=tier.currency_code,
        level=tier.state.level,
        since_us=tier.state.since_us,
        anchor_us=tier.state.anchor_us,
        qualifying_months=_months_json(tier.months),
        update_time_us=now_us,
    )


def save_member_tiers(connection: Connection, tiers: Sequence[MemberTier], now_us: int) -> None:
    """Write the tiers back (their rows exist and are locked by this transaction)."""
    if not tiers:
        return
    statement = (
        update(member_tiers)
        .where(
            and_(
                member_tiers.c.member_id == bindparam("key_member_id"),
                member_tiers.c.currency_code == bindparam("key_currency_code"),
            )
        )
        .values(
            level=bindparam("level"),
            since_us=bindparam("since_us"),
            anchor_us=bindparam("anchor_us"),
            qualifying_months=bindparam("qualifying_months"),
            update_time_us=bindparam("update_time_us"),
        )
    )
    connection.execute(
        statement,
        [
            dict(
                key_member_id=tier.member_id,
                key_currency_code=tier.currency_code,
                level=tier.state.level,
                since_us=tier.state.since_us,
                anchor_us=tier.state.anchor_us,
                qualifying_months=_months_json(tier.months),
                update_time_us=now_us,
            )
            for tier in sorted(tiers, key=lambda tier: (tier.member_id, tier.currency_code))
        ],
    )


def change_qualifying(
    connection: Connection, member_id: str, currency_code: str, month: int, points: int, activities: int
) -> None:
    """Add (or, negative, take off) qualifying totals in one month of a member's tier, under the
    row's lock. A member without a tier row has nothing to change."""
    query = (
        select(member_tiers)
        .where(and_(member_tiers.c.member_id == member_id, member_tiers.c.currency_code == currency_code))
        .with_for_update()
    )
    row = connection.execute(query).first()
    if row is None:
        return
    tier = _member_tier_from_row(row)
    tier.months = add_qualifying(tier.months, month, points, activities)
    connection.execute(
        update(member_tiers)
        .where(and_(member_tiers.c.member_id == member_id, member_tiers.c.currency_code == currency_code))
        .values(qualifying_months=_months_json(tier.months))
    )
