"""The settlement domain against hand-computed figures (DOMAIN.md's worked illustration first)."""

from dataclasses import replace
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.settlement import model
from services.settlement.model import (
    Activity,
    AgreementBook,
    ConversionPrice,
    LineKind,
    MatchStatus,
    PointPrice,
    PriceAgreement,
    SettlementRuleError,
    TransactionRow,
)

OWNERS = {"PTS": "operator", "HOTELPTS": "hotel", "AIRMILES": "airline", "EUR": "operator"}


def agreement(partner, valid_from_us=0, issue="0.0100", reimburse="0.0080", currency="PTS", conversions=()):
    return PriceAgreement(
        agreement_id=f"{partner}-{valid_from_us}",
        partner_id=partner,
        valid_from_us=valid_from_us,
        point_prices=(PointPrice(currency, Decimal(issue), Decimal(reimburse)),),
        conversion_prices=tuple(ConversionPrice(f, t, Decimal(p)) for f, t, p in conversions),
    )


def issuance(partner, code, debits=0, credits=0, currency="PTS"):
    return Activity(f"issuance:{currency}:{partner}", code, currency, debits, credits, partner, "partner_issuance")


def redemption(partner, code, debits=0, credits=0, currency="PTS"):
    return Activity(f"redemption:{currency}:{partner}", code, currency, debits, credits, partner, "partner_redemption")


def exchange(currency, other, debits=0, credits=0):
    return Activity(
        f"exchange:{currency}:{other}",
        "CONVERSION",
        currency,
        debits,
        credits,
        "operator",
        "operator_exchange",
    )


def statements_for(lines, agreements, time_us=0, owners=OWNERS):
    book = AgreementBook(agreements)
    movements = model.movements_from_activity(lines, owners)
    return {s.partner_id: s for s in model.build_statements(model.price_movements(movements, book, time_us, owners))}


def test_worked_illustration_reproduces_domain_figures():
    lines = [
        issuance("retailer", "EARN", debits=1_000_000),
        issuance("retailer", "REVERSAL", credits=20_000),
        issuance("fuel", "EARN", debits=500_000),
        redemption("fuel", "REDEEM", credits=200_000),
        redemption("hotel", "REDEEM", credits=300_000),
    ]
    statements = statements_for(lines, [agreement(p) for p in ("retailer", "fuel", "hotel")])
    assert statements["retailer"].net_cents == 980_000
    assert statements["retailer"].partner_pays_cents == 1_000_000
    assert statements["fuel"].net_cents == 340_000
    assert statements["fuel"].partner_pays_cents == 500_000
    assert statements["fuel"].partner_is_paid_cents == 160_000
    assert statements["hotel"].net_cents == -240_000
    overview = model.netting(list(statements.values()))
    assert overview.operator_net_cents == 1_080_000
    assert overview.balanced


def test_each_line_is_rounded_half_even_once():
    assert model.line_amount_cents(1, Decimal("0.005")) == 0  # 0.5 cent -> 0 (even)
    assert model.line_amount_cents(3, Decimal("0.005")) == 2  # 1.5 cents -> 2 (even)
    assert model.line_amount_cents(5, Decimal("0.005")) == 2  # 2.5 cents -> 2 (even)
    assert model.line_amount_cents(1_234_567, Decimal("0.0085")) == 1_049_382  # 10,493.8195 EUR
    assert model.line_amount_cents(10**18, Decimal("0.000000000001")) == 100_000_000


def test_totals_are_sums_of_rounded_lines_not_rounded_sums():
    # Two sub-windows with different prices: 0.5 cents each would round to 1 cent as a sum, but each
    # line rounds half-even to 0, so the total is 0.
    lines = [issuance("retailer", "EARN", debits=1)]
    book = AgreementBook([agreement("retailer", 0, issue="0.005"), agreement("retailer", 100, issue="0.00500000")])
    movements = model.movements_from_activity(lines, OWNERS)
    priced = model.price_movements(movements, book, 0, OWNERS) + model.price_movements(movements, book, 100, OWNERS)
    (statement,) = model.build_statements(priced)
    assert [line.amount_cents for line in statement.lines] == [0, 0]
    assert statement.net_cents == 0


def test_price_change_inside_period_prices_each_subwindow_by_its_agreement():
    book = AgreementBook([agreement("fuel", 0, issue="0.0100"), agreement("fuel", 500, issue="0.0120")])
    assert model.sub_windows(100, 1000, book) == [(100, 500), (500, 1000)]
    first = model.price_movements(
        model.movements_from_activity([issuance("fuel", "EARN", debits=1000)], OWNERS), book, 100, OWNERS
    )
    second = model.price_movements(
        model.movements_from_activity([issuance("fuel", "EARN", debits=1000)], OWNERS), book, 500, OWNERS
    )
    (statement,) = model.build_statements(first + second)
    assert [(line.unit_price, line.amount_cents) for line in statement.lines] == [
        (Decimal("0.0100"), 1000),
        (Decimal("0.0120"), 1200),
    ]


def test_conversions_between_partners_cancel_in_the_netting():
    # 60,000 hotel points -> 25,000 miles delivered; hotel pays airline 25,000 x 0.0090 = 225.00.
    lines = [
        exchange("HOTELPTS", "AIRMILES", credits=60_000),
        exchange("AIRMILES", "HOTELPTS", debits=25_000),
    ]
    agreements = [
        agreement("hotel", currency="HOTELPTS"),
        agreement("airline", currency="AIRMILES", conversions=[("HOTELPTS", "AIRMILES", "0.0090")]),
    ]
    statements = statements_for(lines, agreements)
    (hotel_line,) = statements["hotel"].lines
    (airline_line,) = statements["airline"].lines
    assert (hotel_line.kind, hotel_line.quantity, hotel_line.amount_cents) == (
        LineKind.CONVERSIONS_OUT,
        25_000,
        22_500,
    )
    assert (airline_line.kind, airline_line.amount_cents) == (LineKind.CONVERSIONS_IN, -22_500)
    assert hotel_line.counterparty_id == "airline" and airline_line.counterparty_id == "hotel"
    overview = model.netting(list(statements.values()))
    assert overview.operator_net_cents == 0 and overview.balanced


def test_conversion_with_operator_currency_has_one_side_only():
    # PTS -> HOTELPTS: the operator (owner of PTS) pays the hotel for the hotel points delivered.
    lines = [exchange("PTS", "HOTELPTS", credits=1000), exchange("HOTELPTS", "PTS", debits=800)]
    agreements = [agreement("hotel", currency="HOTELPTS", conversions=[("PTS", "HOTELPTS", "0.0075")])]
    statements = statements_for(lines, agreements)
    assert list(statements) == ["hotel"]
    assert statements["hotel"].net_cents == -600
    overview = model.netting(list(statements.values()))
    assert overview.operator_net_cents == -600 and overview.balanced


def test_activity_without_a_price_is_refused_by_name():
    with pytest.raises(SettlementRuleError) as caught:
        statements_for([issuance("retailer", "EARN", debits=5)], [])
    assert caught.value.reason == "PRICE_MISSING"


def test_prices_are_parsed_exactly_and_bounded():
    assert model.parse_price("0.0085") == Decimal("0.0085")
    for bad in ("-1", "abc", "0.0000000000001", "NaN"):
        with pytest.raises(SettlementRuleError):
            model.parse_price(bad)


def test_netting_detects_conversions_that_do_not_cancel():
    line = model.StatementLine(
        LineKind.CONVERSIONS_OUT, "AIRMILES", "HOTELPTS", "airline", 1, Decimal(1), 100, "a", False
    )
    overview = model.netting([model.Statement("hotel", (line,))])
    assert not overview.balanced


def test_roll_forward_classifies_flows_and_holds_the_identity():
    lines = [
        issuance("retailer", "EARN", debits=1000),
        issuance("retailer", "REVERSAL", credits=100),
        redemption("fuel", "REDEEM", credits=300),
        redemption("fuel", "REVERSAL", debits=50),
        Activity("breakage:PTS", "EXPIRY", "PTS", 0, 70, "operator", "operator_breakage"),
        exchange("PTS", "HOTELPTS", credits=200),
        exchange("PTS", "AIRMILES", debits=40),
        Activity("adjust:PTS", "ADJUSTMENT", "PTS", 5, 0, "operator", "operator_adjustment"),
        Activity("wallet:PTS:m1", "EARN", "PTS", 0, 1000, "m1", "member_wallet"),
    ]
    rf = model.roll_forward("PTS", 10_000, lines)
    assert (rf.issued, rf.earn_reversed, rf.redeemed, rf.redemption_reversed, rf.expired) == (
        1000,
        100,
        300,
        50,
        70,
    )
    assert (rf.converted_in, rf.converted_out, rf.other_adjustments) == (40, 200, 5)
    assert rf.closing_outstanding == 10_000 + 1000 - 100 - 300 + 50 - 70 + 40 - 200 + 5
    assert rf.identity_holds()
    assert model.wallet_net_change(lines) == {"PTS": rf.closing_outstanding - 10_000}


def test_roll_forward_counts_a_reinstated_expiry_apart_from_the_expiry_and_other_adjustments():
    # 70 expired, 30 of them reinstated by the operator (breakage debited back into the wallet).
    lines = [
        issuance("retailer", "EARN", debits=1000),
        Activity("breakage:PTS", "EXPIRY", "PTS", 0, 70, "operator", "operator_breakage"),
        Activity("breakage:PTS", "REVERSAL", "PTS", 30, 0, "operator", "operator_breakage"),
        Activity("wallet:PTS:m1", "EARN", "PTS", 0, 1000, "m1", "member_wallet"),
        Activity("wallet:PTS:m1", "EXPIRY", "PTS", 70, 0, "m1", "member_wallet"),
        Activity("wallet:PTS:m1", "REVERSAL", "PTS", 0, 30, "m1", "member_wallet"),
    ]
    rf = model.roll_forward("PTS", 500, lines)
    assert (rf.issued, rf.expired, rf.reinstated, rf.other_adjustments) == (1000, 70, 30, 0)
    assert rf.closing_outstanding == 500 + 1000 - 70 + 30
    assert rf.identity_holds()
    assert not replace(rf, reinstated=0).identity_holds()


activity_strategy = st.builds(
    Activity,
    account_id=st.sampled_from(["issuance:PTS:a", "redemption:PTS:b", "breakage:PTS", "exchange:PTS:HOTELPTS", "x"]),
    code=st.sampled_from(["EARN", "REDEEM", "REVERSAL", "CONVERSION", "EXPIRY", "ADJUSTMENT"]),
    currency_code=st.just("PTS"),
    debits=st.integers(0, 10**12),
    credits=st.integers(0, 10**12),
    owner_id=st.sampled_from(["a", "b", "operator"]),
    kind=st.sampled_from(["partner_issuance", "partner_redemption", "operator_breakage", "operator_exchange", "other"]),
)


@given(st.integers(0, 10**12), st.lists(activity_strategy, max_size=30))
def test_roll_forward_identity_holds_for_any_flows(opening, lines):
    assert model.roll_forward("PTS", opening, lines).identity_holds()


@given(st.lists(st.tuples(st.integers(1, 10**9), st.integers(0, 10**6)), min_size=1, max_size=20))
def test_net_is_the_sum_of_rounded_lines(items):
    priced = [
        model.PricedMovement(
            model.Movement("p", LineKind.POINTS_ISSUED, "PTS", quantity),
            Decimal(price) / 10**6,
            f"a{i}",
            False,
        )
        for i, (quantity, price) in enumerate(items)
    ]
    (statement,) = model.build_statements(priced) or [model.Statement("p", ())]
    assert statement.net_cents == sum(model.line_amount_cents(q, Decimal(p) / 10**6) for q, p in items)


def row(receipt, kind, points, line=0, store="s1", currency="PTS", terminal="t1", time="2026-10-01T10:00:00+02:00"):
    return TransactionRow(receipt, store, terminal, time, kind, points, line, currency)


AMSTERDAM = ZoneInfo("Europe/Amsterdam")
OCTOBER = (1_790_805_600_000_000, 1_793_487_600_000_000)  # 2026-10 in Amsterdam, [start, end) in µs
JANUARY = (1_767_222_000_000_000, 1_769_900_400_000_000)  # 2026-01 in Amsterdam


def reconcile_in(period, partner, ledger):
    return model.reconcile(partner, ledger, *period, AMSTERDAM)


def test_reconciliation_classifies_every_kind_of_row():
    partner = [
        row("r1", "EARN", 100, 1),
        row("r2", "EARN", 50, 2),
        row("r3", "REDEEM", 30, 3),
        row("r1", "EARN", 100, 4),
        row("r5", "EARN", 20, 5, store="s2"),
        row("r6", "EARN", 20, 6, terminal="t9"),
        row("r7", "EARN", 20, 7, time="2026-11-01T00:00:00+01:00"),  # the period's end is exclusive
    ]
    ledger = [
        row("r1", "EARN", 100),
        row("r2", "EARN", 55),
        row("r4", "EARN", 10),
        row("r5", "EARN", 20),
        row("r6", "EARN", 20),
        row("r7", "EARN", 20),
    ]
    result = reconcile_in(OCTOBER, partner, ledger)
    assert [(r.receipt_id, r.status) for r in result.rows] == [
        ("r1", MatchStatus.MATCHED),
        ("r2", MatchStatus.AMOUNT_DIFFERS),
        ("r3", MatchStatus.MISSING_IN_LEDGER),
        ("r1", MatchStatus.DUPLICATE),
        ("r5", MatchStatus.STORE_DIFFERS),
        ("r6", MatchStatus.TERMINAL_DIFFERS),
        ("r7", MatchStatus.OUTSIDE_PERIOD),
        ("r4", MatchStatus.MISSING_AT_PARTNER),
        ("r7", MatchStatus.MISSING_AT_PARTNER),  # the partner's only row of it lies outside the period
    ]
    assert result.counts == {status: 1 for status in MatchStatus} | {MatchStatus.MISSING_AT_PARTNER: 2}
    assert result.rows[1].ledger_points == 55 and result.rows[1].partner_points == 50


def test_partner_file_is_parsed_and_bad_rows_are_named():
    data = (
        b"receipt_id,store_id,terminal_id,time,type,points,currency\n"
        b"r1,s1,t1,2026-10-01T10:00:00+02:00,earn,100,PTS\n"
        b"\n"
        b"r2,s1,t2,2026-10-02T10:00:00+02:00,REDEEM,5,HOTELPTS\n"
    )
    rows = model.parse_partner_file(data)
    assert [(r.receipt_id, r.type, r.points, r.line_number, r.currency_code) for r in rows] == [
        ("r1", "EARN", 100, 1, "PTS"),
        ("r2", "REDEEM", 5, 3, "HOTELPTS"),
    ]
    for bad_currency in (b"", b"pts", b"P"):
        with pytest.raises(SettlementRuleError) as caught:
            model.parse_partner_file(data.splitlines(keepends=True)[0] + b"r1,s,t,2026-10-01,EARN,1," + bad_currency)
        assert caught.value.reason == "INVALID_FILE" and "currency" in caught.value.message
    with pytest.raises(SettlementRuleError) as caught:
        model.parse_partner_file(b"receipt_id,store_id,terminal_id,time,type,points\nr1,s,t,notatime,EARN,1\n")
    assert caught.value.reason == "INVALID_FILE" and "row 1" in caught.value.message


def test_prices_have_a_ceiling_so_no_line_overflows_int64_cents():
    assert model.parse_price("1000") == Decimal(1000)
    for bad in ("1000.000000000001", "1000000000000", "999999999999.999999999999"):
        with pytest.raises(SettlementRuleError) as caught:
            model.parse_price(bad)
        assert caught.value.reason == "INVALID_PRICE" and "at most EUR 1000" in caught.value.message
    # Even at the ceiling, a quantity beyond int64 cents is refused by name, never an overflow.
    priced = [
        model.PricedMovement(model.Movement("fuel", LineKind.POINTS_ISSUED, "PTS", 10**18), model.PRICE_MAX, "a", False)
    ]
    with pytest.raises(SettlementRuleError) as caught:
        model.build_statements(priced)
    assert caught.value.reason == "AMOUNT_TOO_LARGE"


HEADER = b"receipt_id,store_id,terminal_id,time,type,points\n"


def refusal_of(data: bytes) -> SettlementRuleError:
    with pytest.raises(SettlementRuleError) as caught:
        model.parse_partner_file(HEADER + data)
    assert caught.value.reason == "INVALID_FILE"
    return caught.value


def test_csv_errors_are_invalid_file_naming_the_row():
    good = b"r1,s1,t1,2026-01-05T10:00:00,EARN,1\n"
    # A field beyond the csv module's field size limit (131,072) raises csv.Error inside the reader.
    error = refusal_of(good + b"r2,s1," + b"x" * 140_000 + b",2026-01-05T10:00:00,EARN,1\n")
    assert error.metadata["line_number"] == 2 and "row 2" in error.message
    # Bad quoting in strict dialects, or a NUL byte in a field: refused, not stored.
    error = refusal_of(good + b"r2,s\x00,t1,2026-01-05T10:00:00,EARN,1\n")
    assert error.metadata["line_number"] == 2
    with pytest.raises(SettlementRuleError) as caught:
        model.parse_partner_file(HEADER + b"r1,\xff,t1,2026-01-05T10:00:00,EARN,1\n")
    assert caught.value.reason == "INVALID_FILE" and "UTF-8" in caught.value.message


@pytest.mark.parametrize(
    "points", ["0", "-1", "1_000", "+5", "1e3", "\u0661\u0662", "\uff11", "1000000000000001", "99999999999999999999"]
)
def test_points_are_ascii_digits_up_to_the_ledger_maximum(points):
    error = refusal_of(f"r1,s1,t1,2026-01-05T10:00:00,EARN,1\nr2,s1,t1,2026-01-05T10:00:00,EARN,{points}\n".encode())
    assert error.metadata["line_number"] == 2 and "row 2" in error.message and "points" in error.message


def test_points_at_the_ledger_maximum_are_accepted():
    (row_read,) = model.parse_partner_file(HEADER + b"r1,s1,t1,2026-01-05T10:00:00,EARN,1000000000000000\n")
    assert row_read.points == model.RECONCILIATION_POINTS_MAX == 10**15


def test_several_partner_rows_of_one_receipt_and_type_are_summed_like_the_ledger():
    # R1 earned 100, then two partial returns of 30 and 20: two reversal rows on each side.
    ledger = [
        TransactionRow("R1", "s1", "t1", "2026-01-05T10:00:00Z", "EARN", 100),
        TransactionRow("R1", "s1", "t1", "2026-01-06T10:00:00Z", "EARN_REVERSAL", 30),
        TransactionRow("R1", "s1", "t1", "2026-01-07T10:00:00Z", "EARN_REVERSAL", 20),
        TransactionRow("R2", "s1", "t1", "2026-01-06T10:00:00Z", "EARN_REVERSAL", 10),
        TransactionRow("R2", "s1", "t1", "2026-01-07T10:00:00Z", "EARN_REVERSAL", 15),
    ]
    partner = [
        TransactionRow("R1", "s1", "t1", "2026-01-05T10:00:00", "EARN", 100, 1),
        TransactionRow("R1", "s1", "t1", "2026-01-06T10:00:00", "EARN_REVERSAL", 30, 2),
        TransactionRow("R1", "s1", "t1", "2026-01-07T10:00:00", "EARN_REVERSAL", 20, 3),
        # An identical repeat of line 3 is a duplicate, left out of the sum: R1 still matches.
        TransactionRow("R1", "s1", "t1", "2026-01-07T10:00:00", "EARN_REVERSAL", 20, 4),
        # R2's two returns add up to 20 at the partner, 25 on the ledger: both rows differ.
        TransactionRow("R2", "s1", "t1", "2026-01-06T10:00:00", "EARN_REVERSAL", 10, 5),
        TransactionRow("R2", "s1", "t2", "2026-01-07T10:00:00", "EARN_REVERSAL", 10, 6),
    ]
    ledger = [replace(r, currency_code="PTS") for r in ledger]
    partner = [replace(r, currency_code="PTS") for r in partner]
    result = reconcile_in(JANUARY, partner, ledger)
    assert [(r.line_number, r.status, r.partner_points, r.ledger_points) for r in result.rows] == [
        (1, MatchStatus.MATCHED, 100, 100),
        (2, MatchStatus.MATCHED, 30, 50),
        (3, MatchStatus.MATCHED, 20, 50),
        (4, MatchStatus.DUPLICATE, 20, 50),
        (5, MatchStatus.AMOUNT_DIFFERS, 10, 25),
        (6, MatchStatus.AMOUNT_DIFFERS, 10, 25),
    ]
    assert result.counts[MatchStatus.MISSING_AT_PARTNER] == 0


def test_a_receipt_paid_in_two_currencies_is_matched_per_currency():
    """200 PTS + 500 HOTELPTS on the ledger; the partner's file says 700 PTS: not MATCHED."""
    ledger = [row("R9", "REDEEM", 200, currency="PTS"), row("R9", "REDEEM", 500, currency="HOTELPTS")]
    result = reconcile_in(OCTOBER, [row("R9", "REDEEM", 700, 1, currency="PTS")], ledger)
    assert [(r.status, r.currency_code, r.partner_points, r.ledger_points) for r in result.rows] == [
        (MatchStatus.AMOUNT_DIFFERS, "PTS", 700, 200),
        (MatchStatus.MISSING_AT_PARTNER, "HOTELPTS", 0, 500),
    ]
    both = [row("R9", "REDEEM", 200, 1, currency="PTS"), row("R9", "REDEEM", 500, 2, currency="HOTELPTS")]
    assert [r.status for r in reconcile_in(OCTOBER, both, ledger).rows] == [MatchStatus.MATCHED] * 2


def test_a_file_without_currency_is_read_only_when_the_ledger_shows_one_currency():
    legacy = model.parse_partner_file(HEADER + b"R9,s1,t1,2026-10-01T10:00:00,REDEEM,700\n")
    assert [r.currency_code for r in legacy] == [""]
    one = [row("R9", "REDEEM", 700, currency="HOTELPTS")]
    assert [r.currency_code for r in model.assign_currency(legacy, one)] == ["HOTELPTS"]
    assert [r.currency_code for r in model.assign_currency(legacy, [])] == [""]
    two = [*one, row("R9", "REDEEM", 200, currency="PTS")]
    with pytest.raises(SettlementRuleError) as caught:
        model.assign_currency(legacy, two)
    assert caught.value.reason == "CURRENCY_COLUMN_REQUIRED" and "HOTELPTS, PTS" in caught.value.message


def test_a_time_without_offset_is_read_in_the_coalition_time_zone():
    # 00:30 on 1 October in Amsterdam is 22:30 UTC on 30 September: inside October, not before it.
    partner = [row("R1", "EARN", 5, 1, time="2026-10-01T00:30:00"), row("R2", "EARN", 5, 2, time="not placed")]
    result = reconcile_in(OCTOBER, partner, [row("R1", "EARN", 5)])
    assert [r.status for r in result.rows] == [MatchStatus.MATCHED, MatchStatus.OUTSIDE_PERIOD]


# ---------------------------------------------------------------- tier bonus funded per agreement


def _with_bonus(line: Activity, bonus: int) -> Activity:
    return replace(line, tier_bonus_points=bonus)


def _funded(partner: str, funder: model.TierBonusFunder, issue: str = "0.0125") -> PriceAgreement:
    return replace(agreement(partner, issue=issue), tier_bonus_funder=funder)


def test_an_operator_funded_tier_bonus_is_credited_once_at_the_issue_price_and_a_partner_funded_one_shows_zero():
    """1,300 issued (252 of them bonus), 200 returned (50 bonus): the operator credits 202 x 0.0125
    = 2.525, half-even 2.52; the partner-funded line shows the same points at EUR 0.00."""
    lines = [
        _with_bonus(issuance("retailer", "EARN", debits=1300), 252),
        _with_bonus(issuance("retailer", "REVERSAL", credits=200), 50),
    ]
    for funder, unit_price, bonus_cents in (
        (model.TierBonusFunder.OPERATOR, Decimal("0.0125"), -252),
        (model.TierBonusFunder.PARTNER, Decimal(0), 0),
    ):
        statement = statements_for(lines, [_funded("retailer", funder)])["retailer"]
        assert [(line.kind, line.quantity, line.amount_cents) for line in statement.lines] == [
            (LineKind.POINTS_ISSUED, 1300, 1625),
            (LineKind.EARN_REVERSALS, 200, -250),
            (LineKind.TIER_BONUS, 202, bonus_cents),
        ]
        bonus = statement.lines[-1]
        assert (bonus.unit_price, bonus.tier_bonus_funder) == (unit_price, funder)
        assert (bonus.tier_bonus_issued_quantity, bonus.tier_bonus_reversed_quantity) == (252, 50)
        assert statement.net_cents == 1625 - 250 + bonus_cents


def test_a_period_that_returns_more_bonus_than_it_issues_makes_the_partner_pay_the_credit_back():
    lines = [_with_bonus(issuance("retailer", "REVERSAL", credits=100), 40)]
    statement = statements_for(lines, [_funded("retailer", model.TierBonusFunder.OPERATOR)])["retailer"]
    assert [(line.kind, line.quantity, line.amount_cents) for line in statement.lines] == [
        (LineKind.EARN_REVERSALS, 100, -125),
        (LineKind.TIER_BONUS, -40, 50),
    ]
    assert model.netting([statement]).balanced


def test_an_unfunded_agreement_version_reads_as_the_partner_funding_the_bonus():
    assert agreement("retailer").tier_bonus_funder is model.TierBonusFunder.PARTNER
    operator = _funded("retailer", model.TierBonusFunder.OPERATOR)
    assert operator.content_key() != agreement("retailer").content_key()


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.data(),
    st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False),
)
def test_the_funder_only_moves_the_tier_bonus_line(issued, returned, data, price):
    """Partner funded: every line and the net are what they were without bonus metadata, plus a
    EUR 0.00 line. Operator funded: the net is lower by exactly the bonus line, rounded once."""
    bonus_issued = data.draw(st.integers(0, issued))
    bonus_returned = data.draw(st.integers(0, returned))
    plain = [issuance("p", "EARN", debits=issued), issuance("p", "REVERSAL", credits=returned)]
    with_bonus = [_with_bonus(plain[0], bonus_issued), _with_bonus(plain[1], bonus_returned)]
    issue = str(price)
    before = statements_for(plain, [agreement("p", issue=issue)]).get("p")
    before_net = before.net_cents if before else 0
    before_lines = before.lines if before else ()
    for funder in model.TierBonusFunder:
        after = statements_for(with_bonus, [_funded("p", funder, issue)]).get("p")
        after_lines = after.lines if after else ()
        others = tuple(line for line in after_lines if line.kind is not LineKind.TIER_BONUS)
        assert others == before_lines
        bonus_cents = sum(line.amount_cents for line in after_lines if line.kind is LineKind.TIER_BONUS)
        net = after.net_cents if after else 0
        if funder is model.TierBonusFunder.PARTNER:
            assert bonus_cents == 0 and net == before_net
        else:
            assert bonus_cents == -model.line_amount_cents(bonus_issued - bonus_returned, Decimal(issue))
            assert net == before_net + bonus_cents
        assert model.netting([after] if after else []).balanced
