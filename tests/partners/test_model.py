"""Unit and property tests of the partners domain: earn pricing and conversion arithmetic."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.partners import converting, earn_pricing, model
from services.partners.converting import ConversionRule
from services.partners.earn_pricing import BasketLine, EarnRule, Promotion
from services.partners.model import DomainError

DAY = 86_400 * model.MICROS_PER_SECOND
NOW = 1_760_000_000 * model.MICROS_PER_SECOND


def rule(**overrides) -> EarnRule:
    values = dict(
        partner_id="fresh-mart",
        version=1,
        currency_code="PTS",
        basis=earn_pricing.BASIS_AMOUNT,
        base_rate=Decimal("0.5"),  # 1 point per EUR 2
    )
    values.update(overrides)
    return EarnRule(**values)


def line(number: int, amount: int, category: str = "grocery", quantity: int = 1000) -> BasketLine:
    return BasketLine(number, f"sku-{number}", category, quantity, amount)


def test_base_rate_rounds_down_once_per_basket_not_per_line():
    # Each line alone is worth 0.75 points; per-line rounding would give 0, per-basket gives 1.
    pricing = earn_pricing.price_basket(rule(), [line(1, 150), line(2, 150)], NOW)
    assert pricing.points == 1
    assert pricing.exact_points == Decimal("1.5")
    assert sum(item.points for item in pricing.lines) == 1


def test_excluded_category_earns_nothing_and_does_not_count_for_threshold():
    promo = Promotion(earn_pricing.PROMOTION_FIXED_BONUS, NOW - DAY, NOW + DAY, bonus_points=100, threshold_amount=5000)
    pricing = earn_pricing.price_basket(
        rule(excluded_categories=frozenset({"tobacco"}), promotion=promo),
        [line(1, 1000), line(2, 9000, "tobacco")],
        NOW,
    )
    assert pricing.points == 5
    assert not pricing.promotion_applied
    assert pricing.lines[1].excluded and pricing.lines[1].points == 0


def test_category_multiplier_applies_to_its_lines():
    pricing = earn_pricing.price_basket(
        rule(category_multipliers={"fresh": Decimal(3)}), [line(1, 1000, "fresh"), line(2, 1000)], NOW
    )
    assert pricing.points == 15 + 5
    assert [item.points for item in pricing.lines] == [15, 5]


def test_promotion_multiplier_only_inside_its_window():
    promo = Promotion(earn_pricing.PROMOTION_MULTIPLIER, NOW, NOW + DAY, multiplier=Decimal(2))
    basket = [line(1, 1000)]
    assert earn_pricing.price_basket(rule(promotion=promo), basket, NOW).points == 10
    assert earn_pricing.price_basket(rule(promotion=promo), basket, NOW - 1).points == 5
    # The end is exclusive.
    assert earn_pricing.price_basket(rule(promotion=promo), basket, NOW + DAY).points == 5


def test_fixed_bonus_needs_the_threshold():
    promo = Promotion(earn_pricing.PROMOTION_FIXED_BONUS, NOW - DAY, NOW + DAY, bonus_points=50, threshold_amount=5000)
    assert earn_pricing.price_basket(rule(promotion=promo), [line(1, 4999)], NOW).points == 24
    priced = earn_pricing.price_basket(rule(promotion=promo), [line(1, 5000)], NOW)
    assert priced.points == 25 + 50 and priced.bonus_points == 50 and priced.promotion_applied


def test_cap_limits_points_after_rounding():
    pricing = earn_pricing.price_basket(rule(cap_points=100), [line(1, 100_000), line(2, 50_000)], NOW)
    assert pricing.points == 100 and pricing.capped
    assert sum(item.points for item in pricing.lines) == 100


def test_quantity_basis_counts_whole_units():
    fuel = rule(basis=earn_pricing.BASIS_QUANTITY, base_rate=Decimal(1))
    assert earn_pricing.price_basket(fuel, [line(1, 9000, "fuel", quantity=45_678)], NOW).points == 45


def test_basket_validation_refuses_duplicate_lines_and_negative_amounts():
    with pytest.raises(DomainError) as error:
        earn_pricing.price_basket(rule(), [line(1, 100), line(1, 100)], NOW)
    assert error.value.reason == "INVALID_BASKET"
    with pytest.raises(DomainError):
        earn_pricing.price_basket(rule(), [line(1, -1)], NOW)
    with pytest.raises(DomainError):
        earn_pricing.price_basket(rule(), [], NOW)


def test_select_version_takes_the_highest_version_in_effect():
    old = rule(version=1, valid_from_micros=0)
    new = rule(version=2, valid_from_micros=NOW)
    assert model.select_version([old, new], NOW - 1) is old
    assert model.select_version([old, new], NOW) is new
    assert model.select_version([rule(valid_from_micros=NOW)], NOW - 1) is None


lines_strategy = st.lists(
    st.tuples(
        st.integers(0, 1_000_000),
        st.sampled_from(["grocery", "fresh", "tobacco", "fuel"]),
        st.integers(1, 100_000),
    ),
    min_size=1,
    max_size=30,
)
rules_strategy = st.builds(
    rule,
    base_rate=st.decimals(min_value=0, max_value=10, places=3),
    category_multipliers=st.just({"fresh": Decimal("2.5")}),
    excluded_categories=st.just(frozenset({"tobacco"})),
    cap_points=st.integers(0, 5000),
    promotion=st.one_of(
        st.none(),
        st.builds(
            Promotion,
            kind=st.just(earn_pricing.PROMOTION_MULTIPLIER),
            start_micros=st.just(NOW - DAY),
            end_micros=st.just(NOW + DAY),
            multiplier=st.decimals(min_value="1", max_value=5, places=2),
            threshold_amount=st.integers(0, 100_000),
        ),
        st.builds(
            Promotion,
            kind=st.just(earn_pricing.PROMOTION_FIXED_BONUS),
            start_micros=st.just(NOW - DAY),
            end_micros=st.just(NOW + DAY),
            bonus_points=st.integers(1, 1000),
            threshold_amount=st.integers(0, 100_000),
        ),
    ),
)


def _basket(raw) -> list[BasketLine]:
    return [
        BasketLine(index + 1, "sku", category, quantity, amount)
        for index, (amount, category, quantity) in enumerate(raw)
    ]


@settings(max_examples=300, deadline=None)
@given(rules_strategy, lines_strategy)
def test_pricing_invariants(earn_rule, raw_lines):
    """Line shares add up to the basket; the basket is the exact total rounded down once
    (plus bonus), never above the cap; excluded lines never earn."""
    basket = _basket(raw_lines)
    pricing = earn_pricing.price_basket(earn_rule, basket, NOW)
    assert sum(item.points for item in pricing.lines) == pricing.points
    assert all(item.points >= 0 for item in pricing.lines)
    uncapped = int(pricing.exact_points) + pricing.bonus_points
    if earn_rule.cap_points:
        assert pricing.points == min(uncapped, earn_rule.cap_points)
    else:
        assert pricing.points == uncapped
    for item, basket_line in zip(pricing.lines, basket, strict=True):
        if basket_line.category == "tobacco":
            assert item.points == 0 and item.excluded


@settings(max_examples=200, deadline=None)
@given(
    rules_strategy,
    lines_strategy,
    st.tuples(st.integers(0, 1_000_000), st.just("grocery"), st.integers(1, 1000)),
)
def test_adding_an_earning_line_never_lowers_the_points(earn_rule, raw_lines, extra):
    before = earn_pricing.price_basket(earn_rule, _basket(raw_lines), NOW).points
    after = earn_pricing.price_basket(earn_rule, _basket([*raw_lines, extra]), NOW).points
    assert after >= before


@given(
    st.integers(0, 10**9),
    st.lists(st.decimals(min_value=0, max_value=10**6, places=4), min_size=1, max_size=50),
)
def test_allocate_adds_up_and_stays_near_the_quota(total, weights):
    shares = earn_pricing.allocate(total, weights)
    assert sum(shares) == total
    weight_sum = sum(weights)
    if weight_sum > 0:
        for share, weight in zip(shares, weights, strict=True):
            quota = Decimal(total) * weight / weight_sum
            assert quota - 1 < share < quota + 1


# ---- conversion ----
def hotel_to_airline(**overrides) -> ConversionRule:
    values = dict(
        from_currency="HOTELPTS",
        to_currency="AIRMILES",
        version=1,
        from_units=3,
        to_units=1,
        bonus_block_from_amount=60_000,
        bonus_to_amount=5_000,
        min_from_amount=3_000,
        step_from_amount=3_000,
        max_from_amount=300_000,
        annual_cap_from_amount=600_000,
    )
    values.update(overrides)
    return ConversionRule(**values)


def test_domain_example_one_full_block_earns_the_bonus():
    outcome = converting.convert(hotel_to_airline(), 60_000, 0)
    assert (outcome.base_to_amount, outcome.bonus_to_amount, outcome.to_amount) == (20_000, 5_000, 25_000)
    assert converting.convert(hotel_to_airline(), 3_000, 0).to_amount == 1_000
    assert converting.convert(hotel_to_airline(), 57_000, 0).bonus_to_amount == 0


@pytest.mark.parametrize(
    ("amount", "converted", "reason"),
    [
        (2_999, 0, "BELOW_MINIMUM"),
        (4_000, 0, "NOT_A_MULTIPLE_OF_STEP"),
        (303_000, 0, "ABOVE_MAXIMUM"),
        (0, 0, "INVALID_AMOUNT"),
        (3_000, 598_000, "ANNUAL_CAP_EXCEEDED"),
    ],
)
def test_conversion_refusals(amount, converted, reason):
    with pytest.raises(DomainError) as error:
        converting.convert(hotel_to_airline(), amount, converted)
    assert error.value.reason == reason
    assert error.value.precondition == (reason == "ANNUAL_CAP_EXCEEDED")


def test_annual_cap_allows_exactly_the_remainder():
    outcome = converting.convert(hotel_to_airline(), 3_000, 597_000)
    assert outcome.annual_remaining_from_amount == 0


def test_fraction_rounds_down_in_the_operators_favour_and_is_shown():
    outcome = converting.convert(hotel_to_airline(min_from_amount=1, step_from_amount=1), 3_001, 0)
    assert outcome.base_to_amount == 1_000
    assert outcome.rounded_down_to_amount == Decimal("0.333333")


@given(
    st.integers(1, 1000),
    st.integers(1, 1000),
    st.integers(0, 100_000),
    st.integers(0, 10_000),
    st.integers(1, 10**9),
)
def test_conversion_never_gives_more_than_the_exact_ratio_plus_bonus(from_units, to_units, block, bonus, amount):
    conversion = ConversionRule("PTS", "AIRMILES", 1, from_units, to_units, block, bonus if block else 0)
    try:
        outcome = converting.convert(conversion, amount, 0)
    except DomainError as error:
        assert error.reason == "ZERO_OUTCOME"
        assert amount * to_units < from_units
        return
    exact = Decimal(amount) * to_units / from_units
    assert outcome.base_to_amount <= exact < outcome.base_to_amount + 1
    assert outcome.bonus_to_amount == ((amount // block) * bonus if block else 0)


def test_conversion_rule_validation():
    with pytest.raises(DomainError):
        converting.check_conversion_rule(hotel_to_airline(to_currency="HOTELPTS"))
    with pytest.raises(DomainError):
        converting.check_conversion_rule(hotel_to_airline(bonus_to_amount=0))
    converting.check_conversion_rule(hotel_to_airline())


def test_quote_expires_at_its_ttl():
    expire = converting.quote_expire_micros(NOW)
    assert not converting.quote_expired(expire, NOW + 59 * model.MICROS_PER_SECOND)
    assert converting.quote_expired(expire, NOW + 60 * model.MICROS_PER_SECOND)


def test_alias_normalisation_and_keyed_hash():
    secret = b"k"
    assert model.alias_hash(secret, "card", "4000 1234 5678") == model.alias_hash(secret, "card", "400012345678")
    assert model.alias_hash(secret, "email", "A@B.example") == model.alias_hash(secret, "email", "a@b.example")
    assert model.alias_hash(secret, "email", "a@b.example") != model.alias_hash(b"other", "email", "a@b.example")
    with pytest.raises(DomainError):
        model.normalize_alias("phone", "0170 123")


def test_year_bounds():
    start, end = converting.utc_year_bounds(NOW)
    assert start <= NOW < end
    assert converting.utc_year_bounds(start) == (start, end)
    assert converting.utc_year_bounds(end - 1) == (start, end)


def test_a_promotion_multiplier_below_one_is_refused():
    """Found by test_adding_an_earning_line_never_lowers_the_points: a 0.5 promotion above a
    threshold made one more line lower the basket's points."""
    promo = Promotion(earn_pricing.PROMOTION_MULTIPLIER, NOW, NOW + DAY, multiplier=Decimal("0.5"))
    with pytest.raises(DomainError) as raised:
        earn_pricing.check_earn_rule(rule(promotion=promo))
    assert "multiplier" in str(raised.value)


def test_a_conversion_rule_that_could_credit_beyond_the_ledger_maximum_is_refused():
    """Review: a rule's ratio x maximum must fit one ledger transfer, or a recorded conversion
    could be one the ledger refuses (INVALID_ARGUMENT) and never complete."""
    unbounded = hotel_to_airline(from_units=1, to_units=10**6, max_from_amount=0, annual_cap_from_amount=0)
    with pytest.raises(model.DomainError) as raised:
        converting.check_conversion_rule(unbounded)
    assert (raised.value.reason, raised.value.metadata["field"]) == ("INVALID_CONVERSION_RULE", "max_from_amount")
    converting.check_conversion_rule(hotel_to_airline(from_units=1, to_units=10**6, max_from_amount=10**9))
    # A rule stored before the bound: the quote refuses what the ledger would.
    with pytest.raises(model.DomainError) as raised:
        converting.convert(unbounded, 3 * 10**9, 0)
    assert raised.value.reason == "CONVERSION_TOO_LARGE" and not raised.value.precondition
    assert converting.convert(unbounded, 3 * 10**6, 0).to_amount == 3 * 10**12 + 50 * 5_000


def test_an_earn_rule_that_could_price_beyond_the_ledger_maximum_is_refused():
    rule = earn_pricing.EarnRule(
        "p", 1, "PTS", earn_pricing.BASIS_AMOUNT, Decimal(1_000_000), {"grocery": Decimal(1000)}
    )
    with pytest.raises(model.DomainError) as raised:
        earn_pricing.check_earn_rule(rule)
    assert raised.value.reason == "INVALID_EARN_RULE"
    earn_pricing.check_earn_rule(dataclasses.replace(rule, cap_points=model.LEDGER_AMOUNT_MAX))
    lines = [earn_pricing.BasketLine(n, "", "grocery", 1000, model.LINE_AMOUNT_MAX) for n in (1, 2)]
    with pytest.raises(model.DomainError) as raised:
        earn_pricing.price_basket(rule, lines, 0)
    assert (raised.value.reason, raised.value.precondition) == ("EARN_TOO_LARGE", True)


def _fingerprint_as_before(**content: object) -> str:
    """The digest as every earlier version made it (stored with each request): only json.dumps."""
    import hashlib
    import json

    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_leaf = st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.text(max_size=12)
_content = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghij_", min_size=1, max_size=8), _content, max_size=6))
def test_a_fingerprint_is_the_digest_earlier_versions_stored_for_the_same_content(content):
    """A retry whose first call was recorded before this version must still match its content."""
    assert model.fingerprint(**content) == _fingerprint_as_before(**content)


def test_a_fingerprint_is_the_earlier_digest_for_the_contents_that_need_json_dumps():
    import datetime
    import enum

    class Tier(enum.IntEnum):
        GOLD = 3

    for content in (
        {"sku": 'a "quoted" \\ sku', "n": 1},
        {"sku": "caf\u00e9 \u2603", "line": [(1, "x")]},
        {"sku": "tab\there\x00"},
        {"sku": "delete\x7f"},  # printable ASCII to orjson, escaped by json.dumps
        {"amount": 2**70, "flag": True, "none": None},
        {"tier": Tier.GOLD, "at": datetime.datetime(2026, 12, 4, 18, 0)},
        {"nested": {"b": 1, "a": [True, False]}},
    ):
        assert model.fingerprint(**content) == _fingerprint_as_before(**content), content
