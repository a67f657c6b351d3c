"""Members' tiers as the till's writes and reads meet them: the tier an earn or a proforma is
priced at, and the qualifying totals that earns, refused earns and returns change.

A batch of earns (earning._earn_batch) reads its members' tier rows once, locked, inside the
batch's recording transaction (`TierBook`): one query whatever the batch's size. Each earn is decided
against the state the earns before it in the batch left, and the book writes every changed row
once, with the batch's earns (one update, and one insert for members new to a currency's tiers;
a refused earn writes nothing). Rows are locked in member and currency order, and an earn of the
same member in another process waits for this batch's commit, so no qualifying point is lost
and no two evaluations of one member interleave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Connection

from services.partners import earn_pricing, model, tiers
from services.partners.app import App
from services.partners.members import MemberRef, known_member_id
from services.partners.store import tiers as tier_store

TierKey = tuple[str, str]  # (member_id, currency_code)


def definition_at(connection: Connection, app: App, currency: str, at_us: int) -> tiers.TierDefinition | None:
    """The currency's tier definition in effect at the time (cached like earn rules: facts.py)."""
    definitions = app.facts.tier_definitions.get_or_load(
        currency, lambda: tier_store.definitions_of(connection, currency)
    )
    return tiers.definition_in_effect(definitions, at_us)


def _applied(level: tiers.TierLevel) -> earn_pricing.TierApplied:
    return earn_pricing.TierApplied(level.name, level.multiplier)


def tier_for_quote(
    connection: Connection, app: App, member_id: str, currency: str, now: int
) -> earn_pricing.TierApplied:
    """The tier a proforma prices at: the member's level now, as an earn now would see it."""
    definition = definition_at(connection, app, currency, now)
    if definition is None:
        return earn_pricing.NO_TIER
    found = tier_store.member_tiers_of(connection, [member_id], lock=False).get((member_id, currency))
    state, months = (found.state, found.months) if found is not None else (tiers.new_state(now), {})
    return _applied(tiers.level_of(definition, tiers.evaluate(definition, state, months, now, app.time_zone)))


class TierBook:
    """The tiers of one batch of earns' members, read at the first earn that needs one."""

    def __init__(self, connection: Connection, app: App, hint: Callable[[], Iterable[TierKey]]) -> None:
        self._connection = connection
        self._app = app
        self._hint = hint  # (member, currency) pairs the batch likely needs, from process caches
        self._members_read: set[str] = set()
        self._tiers: dict[TierKey, tier_store.MemberTier] = {}
        self._changed: dict[TierKey, tier_store.MemberTier] = {}
        self._new: set[TierKey] = set()  # read as absent: inserted, not updated

    def tier_for(self, member_id: str, currency: str, now: int) -> earn_pricing.TierApplied:
        """The tier the member's earn now is priced at (NO_TIER when the currency has no tiers)."""
        definition = definition_at(self._connection, self._app, currency, now)
        if definition is None:
            return earn_pricing.NO_TIER
        tier = self._tier(member_id, currency, now)
        state = tiers.evaluate(definition, tier.state, tier.months, now, self._app.time_zone)
        return _applied(tiers.level_of(definition, state))

    def add_earn(self, member_id: str, currency: str, now: int, qualifying_points: int) -> int:
        """Count an earn's qualifying points (its base points); upgrades the member at once when
        they reach a threshold. Returns the month counted in (0: the currency has no tiers)."""
        definition = definition_at(self._connection, self._app, currency, now)
        if definition is None:
            return 0
        tier = self._tier(member_id, currency, now)
        _, tier.state, tier.months = tiers.apply_earn(
            definition, tier.state, tier.months, now, self._app.time_zone, qualifying_points
        )
        self._changed[(member_id, currency)] = tier
        return tiers.month_of(now, self._app.time_zone)

    def flush(self, now: int) -> None:
        """Write the changed tiers (with the batch's earns, in the same transaction). A member's
        first row is inserted: a concurrent first earn of the same member in another process
        makes this a unique-key conflict, which the earn batch answers by deciding again."""
        changed = list(self._changed.values())
        new = [tier for tier in changed if (tier.member_id, tier.currency_code) in self._new]
        tier_store.insert_member_tiers(self._connection, new, now)
        tier_store.save_member_tiers(self._connection, [tier for tier in changed if tier not in new], now)
        self._new -= {(tier.member_id, tier.currency_code) for tier in new}
        self._changed.clear()

    def _tier(self, member_id: str, currency: str, now: int) -> tier_store.MemberTier:
        key = (member_id, currency)
        if member_id not in self._members_read:
            members = {member_id}
            if not self._members_read:  # the first look: the whole batch's members at once
                members |= {pair[0] for pair in self._hint()}
            self._tiers.update(tier_store.member_tiers_of(self._connection, members, lock=True))
            self._members_read |= members
        if key not in self._tiers:  # a member's first earn in this currency: written at the flush
            self._tiers[key] = tier_store.MemberTier(member_id, currency, tiers.new_state(now), {})
            self._new.add(key)
        return self._tiers[key]


def batch_hint(app: App, calls: Iterable[tuple[str, MemberRef, int]]) -> list[TierKey]:
    """(member, currency) pairs of a batch's earns, (partner_id, member, at) each, as far as this
    process already knows the member and the partner's earn rule: nothing is read for it."""
    pairs = []
    for partner_id, member, at_us in calls:
        rules = app.facts.earn_rules.get(partner_id)
        rule = model.select_version(rules, at_us) if rules else None
        try:
            member_id = known_member_id(app, member)
        except model.DomainError:
            continue  # a malformed alias: the earn is refused on its own
        if rule is not None and member_id:
            pairs.append((member_id, rule.currency_code))
    return pairs


def take_back_earn(connection: Connection, earn) -> None:
    """A refused earn uses up nothing: what it added to the qualifying totals is taken off its month."""
    if not earn.tier_name or not earn.tier_month:
        return
    qualifying = earn.points - earn.tier_bonus_points
    tier_store.change_qualifying(
        connection, earn.member_id, earn.currency_code, earn.tier_month, -qualifying, -1 if qualifying > 0 else 0
    )


def change_for_return(
    connection: Connection, app: App, member_id: str, currency: str, at_us: int, points: int, activities: int
) -> None:
    """A return takes its lines' qualifying points (and a whole basket's activity) off the month it
    is recorded in; a refused return gives them back there (negative amounts take off)."""
    if points or activities:
        tier_store.change_qualifying(
            connection, member_id, currency, tiers.month_of(at_us, app.time_zone), points, activities
        )


def return_shares(earn, lines: dict, line_numbers: Iterable[int], completes: bool) -> tuple[int, int, int]:
    """Of a return of `line_numbers` of `earn`: the lines' tier bonus, and what it takes off the
    member's qualifying totals (the lines' base points; the activity when the basket is now
    wholly returned; nothing when the earn counted nothing)."""
    numbers = list(line_numbers)
    bonus = sum(lines[number].tier_bonus_points for number in numbers)
    if earn is None or not earn.tier_name or not earn.tier_month:
        return bonus, 0, 0
    base = sum(lines[number].points for number in numbers) - bonus
    counted_activity = earn.points - earn.tier_bonus_points > 0
    return bonus, base, 1 if completes and counted_activity and numbers else 0


def reversed_bonus(tier_bonus_due: int, reversed_points: int, due: int) -> int:
    """The tier bonus share of an earn reversal: all of the lines' bonus when the whole due is taken
    back; when the member had spent some, the same share of what is taken back, rounded down."""
    return tier_bonus_due * reversed_points // due if due > 0 else 0
