"""Pure rules of corrections (issue 11): reversals priced at their originals' price, adjustment
lines, review transitions. No servers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.settlement import corrections, model, reversal_pricing
from services.settlement.corrections import (
    Adjustment,
    AdjustmentDirection,
    AdjustmentLink,
    ReviewStatus,
)
from services.settlement.model import Activity, AgreementBook, LineKind, PointPrice, PriceAgreement

OWNERS = {"PTS": "operator"}
CHANGE_US = 1_000_000


def _book(issue_a: Decimal, issue_b: Decimal, reimburse_a=Decimal("0.008"), reimburse_b=Decimal("0.016")):
    return AgreementBook(
        [
            PriceAgreement("v1", "retailer", 0, (PointPrice("PTS", issue_a, reimburse_a),)),
            PriceAgreement("v2", "retailer", CHANGE_US, (PointPrice("PTS", issue_b, reimburse_b),)),
        ]
    )


def _issuance(code: str, debits: int, credits: int, **original) -> Activity:
    return Activity("issuance:PTS:retailer", code, "PTS", debits, credits, "retailer", "partner_issuance", **original)


def _net(lines: list[Activity], book: AgreementBook, at_us: int) -> int:
    priced = model.price_movements(model.movements_from_activity(lines, OWNERS), book, at_us, OWNERS)
    return sum(s.net_cents for s in model.build_statements(priced))


def test_a_return_after_a_price_change_is_credited_at_its_earns_price_and_names_the_period():
    book = _book(Decimal("0.0100"), Decimal("0.0200"))
    returned = _issuance("REVERSAL", 0, 200, original_time_us=0, original_period_id="2026-10")
    redemption_reversal = Activity(
        "redemption:PTS:retailer", "REVERSAL", "PTS", 100, 0, "retailer", "partner_redemption", original_time_us=0
    )
    priced = model.price_movements(
        model.movements_from_activity([returned, redemption_reversal], OWNERS), book, CHANGE_US, OWNERS
    )
    (statement,) = model.build_statements(priced)
    assert [
        (line.kind, line.unit_price, line.amount_cents, line.agreement_id, line.original_period_id)
        for line in statement.lines
    ] == [
        (LineKind.EARN_REVERSALS, Decimal("0.0100"), -200, "v1", "2026-10"),
        (LineKind.REDEMPTION_REVERSALS, Decimal("0.008"), 80, "v1", ""),
    ]
    # Unknown originals (or older than every agreement) are priced at the reversal's own time.
    for original in ({}, {"original_time_us": -5}):
        (unknown,) = model.build_statements(
            model.price_movements(
                model.movements_from_activity([_issuance("REVERSAL", 0, 200, **original)], OWNERS),
                book,
                CHANGE_US,
                OWNERS,
            )
        )
        assert [(line.agreement_id, line.amount_cents) for line in unknown.lines] == [("v2", -400)]


@given(
    issued=st.integers(1, 10**9),
    returned_share=st.fractions(0, 1),
    cents_a=st.integers(0, 500),
    price_b=st.decimals(0, 10, places=6),
)
def test_a_price_change_between_an_earn_and_its_return_gives_nobody_a_gain(issued, returned_share, cents_a, price_b):
    """Issued in window 1 at price A, part returned in window 2 under price B: the partner pays the
    same whatever B is; with A a whole number of cents, exactly the bill of the net points at A."""
    price_a = Decimal(cents_a) / 100
    returned = int(issued * returned_share)
    earn = [_issuance("EARN", issued, 0)]
    back = [_issuance("REVERSAL", 0, returned, original_time_us=0)] if returned else []
    total = _net(earn, _book(price_a, price_b), 0) + _net(back, _book(price_a, price_b), CHANGE_US)
    same_price = _net(earn, _book(price_a, price_a), 0) + _net(back, _book(price_a, price_a), CHANGE_US)
    assert total == same_price == model.line_amount_cents(issued - returned, price_a)


def test_original_time_bounds_are_agreement_starts_and_closed_period_bounds_before_the_end():
    book = _book(Decimal(1), Decimal(2))
    closed = [reversal_pricing.ClosedWindow("p1", 10, 20), reversal_pricing.ClosedWindow("p2", 20, 30)]
    assert reversal_pricing.original_time_bounds(book, closed, 25) == [0, 10, 20]
    assert reversal_pricing.original_time_bounds(book, closed, 2 * CHANGE_US) == [0, 10, 20, 30, CHANGE_US]
    assert [reversal_pricing.closed_period_at(closed, t) for t in (9, 10, 19, 20, 29, 30)] == [
        "",
        "p1",
        "p1",
        "p2",
        "p2",
        "",
    ]


def _adjustment(adjustment_id, partner_id, direction, cents) -> Adjustment:
    return Adjustment(adjustment_id, partner_id, direction, cents, "why", AdjustmentLink("rec", 1))


def test_adjustments_are_lines_of_their_partners_statements_signed_by_their_direction():
    book = _book(Decimal("0.01"), Decimal("0.01"))
    priced = model.price_movements(model.movements_from_activity([_issuance("EARN", 100, 0)], OWNERS), book, 0, OWNERS)
    statements = corrections.with_adjustments(
        model.build_statements(priced),
        [
            _adjustment("b", "retailer", AdjustmentDirection.OPERATOR_PAYS, 30),
            _adjustment("a", "hotel", AdjustmentDirection.PARTNER_PAYS, 5),
        ],
    )
    assert [(s.partner_id, [(line.kind, line.amount_cents) for line in s.lines]) for s in statements] == [
        ("hotel", [(LineKind.ADJUSTMENT, 5)]),
        ("retailer", [(LineKind.POINTS_ISSUED, 100), (LineKind.ADJUSTMENT, -30)]),
    ]
    assert model.netting(statements).balanced and model.netting(statements).operator_net_cents == 75


@pytest.mark.parametrize(
    ("link", "cents", "reason"),
    [
        (AdjustmentLink(), 1, "INVALID_LINK"),
        (AdjustmentLink("rec", 1, "p1", 1), 1, "INVALID_LINK"),
        (AdjustmentLink("rec", 0), 1, "INVALID_LINK"),
        (AdjustmentLink("rec", 1), 0, "INVALID_AMOUNT"),
        (AdjustmentLink("rec", 1), corrections.ADJUSTMENT_AMOUNT_CENTS_MAX + 1, "INVALID_AMOUNT"),
    ],
)
def test_an_adjustment_needs_one_link_and_a_bounded_amount(link, cents, reason):
    with pytest.raises(model.SettlementRuleError) as refused:
        corrections.check_adjustment(Adjustment("a", "p", AdjustmentDirection.PARTNER_PAYS, cents, "why", link))
    assert refused.value.reason == reason


def test_review_statuses_start_by_match_and_resolved_is_final():
    assert corrections.initial_review_status(model.MatchStatus.MATCHED) is ReviewStatus.ACCEPTED
    assert corrections.initial_review_status(model.MatchStatus.AMOUNT_DIFFERS) is ReviewStatus.OPEN
    corrections.check_transition(ReviewStatus.OPEN, ReviewStatus.DISPUTED)
    corrections.check_transition(ReviewStatus.DISPUTED, ReviewStatus.RESOLVED)
    for current, wanted in (
        (ReviewStatus.RESOLVED, ReviewStatus.OPEN),
        (ReviewStatus.OPEN, ReviewStatus.OPEN),
        (ReviewStatus.ACCEPTED, ReviewStatus.OPEN),
    ):
        with pytest.raises(model.SettlementRuleError) as refused:
            corrections.check_transition(current, wanted)
        assert refused.value.reason == "INVALID_STATUS_TRANSITION"
