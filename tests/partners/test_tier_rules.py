"""The pure tier rules (services/partners/tiers.py) and the tier multiplier in basket pricing:
the DOMAIN.md example (Base x1, Silver x1.25 from 2,500, Gold x1.5 from 10,000), and hypothesis
over random earns, returns and times: an upgrade takes effect at once, a level never drops before
the end of an evaluation period plus grace nor because of a return before that evaluation, and a
basket's points are its base points plus a bonus that the cap bounds with them."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.partners import earn_pricing, tiers
from services.partners.model import DomainError

ZONE = ZoneInfo("Europe/Amsterdam")
DAY_US = 86_400 * 1_000_000
LEVELS = (
    tiers.TierLevel("Base", 0, Decimal(1)),
    tiers.TierLevel("Silver", 2_500, Decimal("1.25")),
    tiers.TierLevel("Gold", 10_000, Decimal("1.5")),
)


def _definition(window: str = tiers.WINDOW_CALENDAR_YEAR, grace: int = 2, measure: str = tiers.MEASURE_POINTS):
    return tiers.TierDefinition("PTS", 0, measure, window, grace, LEVELS)


def _at(year: int, month: int, day: int = 1, hour: int = 12) -> int:
    return int(dt.datetime(year, month, day, hour, tzinfo=ZONE).timestamp()) * 1_000_000


def _earn(definition, state, months, now, points):
    _, state, months = tiers.apply_earn(definition, state, months, now, ZONE, points)
    return state, months


def test_the_domain_example_upgrades_at_once_and_downgrades_after_the_next_year_plus_grace():
    definition = _definition()
    state, months = tiers.new_state(_at(2026, 1)), {}
    level, state, months = tiers.apply_earn(definition, state, months, _at(2026, 3), ZONE, 2_600)
    assert level.name == "Base"  # the earn that qualifies is priced before it counts
    assert tiers.level_of(definition, state).name == "Silver" and state.since_us == _at(2026, 3)
    level, _, _ = tiers.apply_earn(definition, state, months, _at(2026, 3, 2), ZONE, 10)
    assert level.multiplier == Decimal("1.25")  # the next earn uses the new multiplier
    status = tiers.status(definition, state, months, _at(2026, 6), ZONE)
    # Reached in 2026: kept through 2027, downgraded on 1 March 2028 (two grace months).
    assert status.valid_until_us == _at(2028, 3, 1, 0)
    assert (status.qualifying, status.to_next_level, status.to_keep_level) == (2_600, 7_400, 0)
    expected_levels = ((_at(2027, 12, 31), "Silver"), (_at(2028, 2, 29, 23), "Silver"), (_at(2028, 3, 1, 0), "Base"))
    for moment, expected in expected_levels:
        assert tiers.level_of(definition, tiers.evaluate(definition, state, months, moment, ZONE)).name == expected
    after = tiers.evaluate(definition, state, months, _at(2028, 4), ZONE)
    assert after.since_us == _at(2028, 3, 1, 0)


def test_a_return_removes_qualifying_points_but_the_level_holds_until_the_evaluation_plus_grace():
    definition = _definition()
    state, months = _earn(definition, tiers.new_state(_at(2026, 1)), {}, _at(2026, 5), 3_000)
    months = tiers.add_qualifying(months, tiers.month_of(_at(2026, 6), ZONE), -1_000, 0)
    now = _at(2026, 6, 2)
    assert tiers.level_of(definition, tiers.evaluate(definition, state, months, now, ZONE)).name == "Silver"
    status = tiers.status(definition, state, months, now, ZONE)
    assert (status.qualifying, status.to_keep_level) == (2_000, 500)
    assert status.valid_until_us == _at(2027, 3, 1, 0)  # 2026's evaluation now fails: end of 2026 + grace
    assert tiers.level_of(definition, tiers.evaluate(definition, state, months, _at(2027, 3, 1, 0), ZONE)).name == (
        "Base"
    )


def test_reaching_the_level_again_within_the_grace_keeps_it():
    definition = _definition(window=tiers.WINDOW_ROLLING_12_MONTHS, grace=1)
    state, months = _earn(definition, tiers.new_state(_at(2026, 1)), {}, _at(2026, 1, 10), 2_500)
    # The window of January 2027 no longer holds January 2026: that evaluation fails, and the
    # level ends at the end of January 2027 plus one month.
    assert tiers.status(definition, state, months, _at(2026, 12, 5), ZONE).valid_until_us == _at(2027, 3, 1, 0)
    in_grace = tiers.status(definition, state, months, _at(2027, 2, 10), ZONE)
    assert (in_grace.level, in_grace.valid_until_us, in_grace.to_keep_level) == (1, _at(2027, 3, 1, 0), 2_500)
    state, months = _earn(definition, state, months, _at(2027, 2, 20), 2_500)
    assert tiers.level_of(definition, tiers.evaluate(definition, state, months, _at(2027, 6), ZONE)).name == "Silver"
    assert state.since_us == _at(2026, 1, 10)


def test_activities_count_earns_with_qualifying_points():
    definition = tiers.TierDefinition(
        "PTS",
        0,
        tiers.MEASURE_ACTIVITIES,
        tiers.WINDOW_CALENDAR_YEAR,
        0,
        (tiers.TierLevel("Base", 0, Decimal(1)), tiers.TierLevel("Regular", 3, Decimal("1.1"))),
    )
    state, months = tiers.new_state(_at(2026, 1)), {}
    for day, points in ((2, 5), (3, 0), (4, 7), (5, 1)):
        state, months = _earn(definition, state, months, _at(2026, 2, day), points)
    assert tiers.level_of(definition, state).name == "Regular"
    assert tiers.status(definition, state, months, _at(2026, 2, 6), ZONE).qualifying == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"levels": ()}, "definition.levels"),
        ({"levels": (tiers.TierLevel("Base", 1, Decimal(1)),)}, "definition.levels"),
        ({"levels": (LEVELS[0], LEVELS[2], LEVELS[1])}, "definition.levels.threshold"),
        ({"levels": (LEVELS[0], tiers.TierLevel("Silver", 0, Decimal(1)))}, "definition.levels.threshold"),
        ({"levels": (LEVELS[0], tiers.TierLevel("Silver", 5, Decimal("0.9")))}, "definition.levels.multiplier"),
        ({"levels": (LEVELS[0], tiers.TierLevel("Silver", 5, Decimal("1.00001")))}, "definition.levels.multiplier"),
        ({"levels": (tiers.TierLevel("B", 0, Decimal(2)), tiers.TierLevel("S", 5, Decimal(1)))}, "definition.levels"),
        ({"levels": (LEVELS[0], tiers.TierLevel("Base", 5, Decimal(2)))}, "definition.levels.name"),
        ({"grace_months": -1}, "definition.grace_months"),
        ({"measure": ""}, "definition.measure"),
        ({"window": "weekly"}, "definition.window"),
    ],
)
def test_a_definition_that_cannot_rank_every_member_is_refused_with_the_field(change, field):
    definition = _definition()
    definition = tiers.TierDefinition(
        **{name: change.get(name, getattr(definition, name)) for name in tiers.TierDefinition.__slots__}
    )
    with pytest.raises(DomainError) as refused:
        tiers.check_definition(definition)
    assert refused.value.reason == "INVALID_TIER_DEFINITION"
    assert refused.value.metadata["field"] == field


_events = st.lists(
    st.tuples(st.integers(0, 40 * 31), st.integers(-800, 3_000)),  # (days after the start, qualifying points)
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    events=_events,
    window=st.sampled_from([tiers.WINDOW_CALENDAR_YEAR, tiers.WINDOW_ROLLING_12_MONTHS]),
    grace=st.integers(0, 6),
)
def test_levels_rise_at_once_and_fall_only_at_an_evaluation_plus_grace(events, window, grace):
    """Random earns (positive) and returns (negative) over 40 months, each looked at just before
    and after: the level after an earn is at least what the window reaches; between two events it
    only falls at a month start, and never earlier than the end of the period in which the member
    last held it plus grace; a return never lowers it at once."""
    definition = _definition(window, grace)
    start = _at(2026, 1, 1, 0)
    state, months = tiers.new_state(start), {}
    previous_now = start
    for days, points in sorted(events):
        now = start + days * DAY_US + 3_600_000_000
        before = tiers.evaluate(definition, state, months, now, ZONE)
        held = tiers.evaluate(definition, state, months, previous_now, ZONE)
        if before.level < held.level and before.since_us != now:
            # A drop between two events happens at a period end plus grace, after a full period since.
            assert previous_now < before.since_us <= now
            assert before.since_us == tiers.month_start_us(tiers.month_of(before.since_us, ZONE), ZONE)
            assert before.since_us >= held.anchor_us + (grace + 1) * 28 * DAY_US
        assert tiers.evaluate(definition, before, months, now, ZONE) == before  # evaluating again changes nothing
        if points >= 0:
            state, months = _earn(definition, before, months, now, points)
            period_total = tiers.status(definition, state, months, now, ZONE).qualifying
            assert state.level >= tiers.level_reached(definition, period_total)
        else:
            months = tiers.add_qualifying(months, tiers.month_of(now, ZONE), points, 0)
            state = tiers.evaluate(definition, before, months, now, ZONE)
            assert state.level == before.level  # no downgrade at the till
        previous_now = now


_line = st.tuples(st.integers(0, 2_000_000), st.sampled_from(["grocery", "fresh", "tobacco"]))


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(_line, min_size=1, max_size=8),
    multiplier=st.sampled_from(["1", "1.1", "1.25", "1.5", "2", "3.3333"]),
    cap=st.sampled_from([0, 50, 1_000, 40_000]),
    bonus=st.sampled_from([0, 7]),
)
def test_the_tier_bonus_is_the_multiplied_basket_rounded_once_less_the_base_within_the_cap(
    lines, multiplier, cap, bonus
):
    promotion = None
    if bonus:
        promotion = earn_pricing.Promotion(earn_pricing.PROMOTION_FIXED_BONUS, 0, 10**18, bonus_points=bonus)
    rule = earn_pricing.EarnRule(
        "shop",
        1,
        "PTS",
        earn_pricing.BASIS_AMOUNT,
        Decimal("0.5"),
        category_multipliers={"fresh": Decimal("1.5")},
        excluded_categories=frozenset({"tobacco"}),
        promotion=promotion,
        cap_points=cap,
    )
    basket = [
        earn_pricing.BasketLine(index + 1, f"sku{index}", category, 1000, amount)
        for index, (amount, category) in enumerate(lines)
    ]
    tier = earn_pricing.TierApplied("Silver", Decimal(multiplier))
    plain = earn_pricing.price_basket(rule, basket, 1)
    priced = earn_pricing.price_basket(rule, basket, 1, tier)
    exact = plain.exact_points
    uncapped = int((exact * Decimal(multiplier)).to_integral_value(rounding=ROUND_DOWN)) + plain.bonus_points
    assert priced.points == (min(uncapped, cap) if cap else uncapped)
    assert priced.base_points == plain.points  # what the earn rule alone gives is what qualifies
    assert priced.tier_bonus_points == priced.points - plain.points >= 0
    assert sum(line.points for line in priced.lines) == priced.points
    assert sum(line.tier_bonus_points for line in priced.lines) == priced.tier_bonus_points
    assert all(0 <= line.tier_bonus_points <= line.points for line in priced.lines)
    assert all(line.tier_bonus_points == 0 for line in priced.lines if line.excluded)
