"""Conversions between programmes over real gRPC: quotes, execution, rule edges, ledger legs."""

from __future__ import annotations

import uuid

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as pb
from tests.partners.conftest import unique
from tests.partners.test_error_metadata import error_metadata
from tests.support.tls import channel as tls_channel

Code = grpc.StatusCode


def _currency(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
def programmes(coalition):
    """A hotel (its points earn 100 per EUR) and an airline, and a hotel -> airline rule
    shaped like DOMAIN.md's example, with a yearly cap of 120,000 hotel points."""
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=_currency("H"), base_rate="100")
    airline = coalition.register_partner(pb.PARTNER_KIND_AIRLINE, currency=_currency("A"), base_rate="1")
    rule = pb.ConversionRule(
        from_currency_code=hotel.currency,
        to_currency_code=airline.currency,
        from_units=3,
        to_units=1,
        bonus_block_from_amount=60_000,
        bonus_to_amount=5_000,
        min_from_amount=3_000,
        step_from_amount=3_000,
        max_from_amount=300_000,
        annual_cap_from_amount=120_000,
    )
    coalition.call("CreateConversionRule", pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule")))
    member_id, _ = coalition.enroll()
    coalition.earn(hotel, member_id, [200_000])  # EUR 2,000 -> 200,000 hotel points
    return hotel, airline, member_id


def _quote(coalition, partner, member_id, amount, from_currency=None, to_currency=None):
    request = pb.QuoteConversionRequest(
        member=pb.MemberIdentity(member_id=member_id),
        from_currency_code=from_currency or partner[0].currency,
        to_currency_code=to_currency or partner[1].currency,
        from_amount=amount,
    )
    return request


def test_one_full_block_converts_with_its_bonus_and_moves_linked_legs(coalition, programmes):
    hotel, airline, member_id = programmes
    quote = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 60_000), hotel.key).quote
    assert (quote.base_to_amount, quote.bonus_to_amount, quote.to_amount) == (20_000, 5_000, 25_000)
    assert quote.annual_remaining_from_amount == 60_000
    execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    done = coalition.call("ExecuteConversion", execute, hotel.key).conversion
    assert done.state == pb.CONVERSION_STATE_COMPLETED
    assert coalition.call("ExecuteConversion", execute, hotel.key).conversion == done
    assert coalition.balance(member_id, hotel.currency).posted == 140_000
    assert coalition.balance(member_id, airline.currency).posted == 25_000
    again = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    assert coalition.error("ExecuteConversion", again, hotel.key) == (Code.FAILED_PRECONDITION, "QUOTE_ALREADY_USED")
    # The operator's exchange accounts carry each side; every currency still sums to zero.
    with tls_channel(coalition.ledger_address) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        balances = ledger.GetBalances(
            ledger_pb2.GetBalancesRequest(
                account_ids=[
                    f"exchange:{hotel.currency}:{airline.currency}",
                    f"exchange:{airline.currency}:{hotel.currency}",
                ]
            )
        ).balances
        assert (balances[0].credits_posted, balances[1].debits_posted) == (60_000, 25_000)
        transfers = ledger.GetTransfers(ledger_pb2.GetTransfersRequest(ids=[f"{done.conversion_id}:out"])).transfers
        assert transfers[0].metadata.partner_id == hotel.partner_id
        assert transfers[0].metadata.receipt_id == done.conversion_id
        assert ledger.GetTrialBalance(ledger_pb2.GetTrialBalanceRequest()).balanced
    history = coalition.call(
        "ListConversions", pb.ListConversionsRequest(member=pb.MemberIdentity(member_id=member_id)), airline.key
    )
    assert [item.conversion_id for item in history.conversions] == [done.conversion_id]


@pytest.mark.parametrize(
    ("amount", "reason"), [(2_999, "BELOW_MINIMUM"), (4_000, "NOT_A_MULTIPLE_OF_STEP"), (303_000, "ABOVE_MAXIMUM")]
)
def test_amount_edges_are_invalid(coalition, programmes, amount, reason):
    hotel, _, member_id = programmes
    assert coalition.error("QuoteConversion", _quote(coalition, programmes, member_id, amount), hotel.key) == (
        Code.INVALID_ARGUMENT,
        reason,
    )


def test_minimum_converts_without_bonus(coalition, programmes):
    hotel, _, member_id = programmes
    quote = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 3_000), hotel.key).quote
    assert (quote.to_amount, quote.bonus_to_amount) == (1_000, 0)


def test_annual_cap_counts_executed_conversions(coalition, programmes):
    hotel, _, member_id = programmes
    first = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 60_000), hotel.key).quote
    second = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 60_000), hotel.key).quote
    third = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 60_000), hotel.key).quote
    for quote in (first, second):
        coalition.call(
            "ExecuteConversion", pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id), hotel.key
        )
    # Quoted while there was room, executed after the room was used: refused at execution.
    late = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=third.quote_id)
    assert coalition.error("ExecuteConversion", late, hotel.key) == (Code.FAILED_PRECONDITION, "ANNUAL_CAP_EXCEEDED")
    assert coalition.error("QuoteConversion", _quote(coalition, programmes, member_id, 3_000), hotel.key) == (
        Code.FAILED_PRECONDITION,
        "ANNUAL_CAP_EXCEEDED",
    )


def test_a_quote_keeps_its_outcome_when_a_new_rule_version_starts(coalition, programmes):
    hotel, airline, member_id = programmes
    quote = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 30_000), hotel.key).quote
    assert quote.rule_version == 1 and quote.to_amount == 10_000
    worse = pb.ConversionRule(
        from_currency_code=hotel.currency,
        to_currency_code=airline.currency,
        from_units=6,
        to_units=1,
        min_from_amount=3_000,
        step_from_amount=3_000,
    )
    assert (
        coalition.call(
            "CreateConversionRule", pb.CreateConversionRuleRequest(rule=worse, request_id=unique("rule"))
        ).rule.version
        == 2
    )
    done = coalition.call(
        "ExecuteConversion", pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id), hotel.key
    ).conversion
    assert done.quote.to_amount == 10_000 and done.quote.rule_version == 1
    fresh = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 30_000), hotel.key).quote
    assert fresh.rule_version == 2 and fresh.to_amount == 5_000


def test_an_expired_quote_is_refused(coalition, programmes):
    hotel, _, member_id = programmes
    quote = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 3_000), hotel.key).quote
    coalition.clock.advance(61)
    try:
        execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
        assert coalition.error("ExecuteConversion", execute, hotel.key) == (Code.FAILED_PRECONDITION, "QUOTE_EXPIRED")
    finally:
        coalition.clock.advance(-61)


def test_converting_more_than_the_wallet_holds_moves_nothing(coalition, programmes):
    hotel, airline, _ = programmes
    poor_id, _ = coalition.enroll()
    coalition.earn(hotel, poor_id, [2_000])  # 2,000 hotel points
    quote = coalition.call("QuoteConversion", _quote(coalition, programmes, poor_id, 3_000), hotel.key).quote
    execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    assert coalition.error("ExecuteConversion", execute, hotel.key) == (Code.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    refused = error_metadata(coalition, "ExecuteConversion", execute, hotel.key)  # the retry says the same
    assert refused == {
        "reason": "INSUFFICIENT_POINTS",
        "requested": "3000",
        "available": "2000",
        "currency": hotel.currency,
    }
    assert coalition.balance(poor_id, hotel.currency).posted == 2_000
    assert coalition.balance(poor_id, airline.currency).posted == 0


def test_only_owners_of_a_currency_may_convert_it(coalition, programmes):
    hotel, airline, member_id = programmes
    shop = coalition.register_partner()
    request = _quote(coalition, programmes, member_id, 3_000)
    assert coalition.error("QuoteConversion", request, shop.key) == (Code.PERMISSION_DENIED, "CONVERSION_NOT_OWNED")
    quote = coalition.call("QuoteConversion", request, hotel.key).quote
    # A quote belongs to whoever asked for it.
    execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    assert coalition.error("ExecuteConversion", execute, airline.key) == (Code.NOT_FOUND, "QUOTE_NOT_FOUND")
    history = pb.ListConversionsRequest(member=pb.MemberIdentity(member_id=member_id))
    assert list(coalition.call("ListConversions", history, shop.key).conversions) == []


def test_pts_to_programme_and_rules_listing(coalition, programmes):
    hotel, _, member_id = programmes
    shop = coalition.register_partner()
    coalition.earn(shop, member_id, [20_000])  # 100 PTS
    rule = pb.ConversionRule(
        from_currency_code="PTS",
        to_currency_code=hotel.currency,
        from_units=1,
        to_units=2,
        min_from_amount=10,
        step_from_amount=10,
    )
    coalition.call("CreateConversionRule", pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule")))
    listed = coalition.call("ListConversionRules", pb.ListConversionRulesRequest(), shop.key).rules
    assert any(item.from_currency_code == "PTS" and item.to_currency_code == hotel.currency for item in listed)
    quote = coalition.call(
        "QuoteConversion", _quote(coalition, programmes, member_id, 100, "PTS", hotel.currency), hotel.key
    ).quote
    coalition.call(
        "ExecuteConversion", pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id), hotel.key
    )
    assert coalition.balance(member_id, "PTS").posted == 0
    assert coalition.balance(member_id, hotel.currency).posted == 200_200
    missing = _quote(coalition, programmes, member_id, 100, hotel.currency, "PTS")
    assert coalition.error("QuoteConversion", missing, hotel.key) == (Code.FAILED_PRECONDITION, "NO_CONVERSION_RULE")


def test_execute_retried_after_a_client_timeout_converts_once(coalition, programmes):
    hotel, airline, member_id = programmes
    quote = coalition.call("QuoteConversion", _quote(coalition, programmes, member_id, 3_000), hotel.key).quote
    execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    try:
        coalition.call("ExecuteConversion", execute, hotel.key, timeout=0.001)
    except grpc.RpcError as error:
        assert error.code() == Code.DEADLINE_EXCEEDED
    done = coalition.call("ExecuteConversion", execute, hotel.key).conversion
    assert coalition.call("ExecuteConversion", execute, hotel.key).conversion == done
    assert coalition.balance(member_id, hotel.currency).posted == 200_000 - 3_000
    assert coalition.balance(member_id, airline.currency).posted == 1_000


def test_a_conversion_rule_whose_ratio_times_maximum_exceeds_the_ledger_maximum_is_refused(coalition):
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=_currency("H"), base_rate="1")
    airline = coalition.register_partner(pb.PARTNER_KIND_AIRLINE, currency=_currency("A"), base_rate="1")
    rule = pb.ConversionRule(
        from_currency_code=hotel.currency,
        to_currency_code=airline.currency,
        from_units=1,
        to_units=10**6,
        min_from_amount=1,
        step_from_amount=1,
    )
    request = pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule"))
    with pytest.raises(grpc.RpcError) as raised:
        coalition.call("CreateConversionRule", request)
    assert raised.value.code() == Code.INVALID_ARGUMENT and "ledger transfer" in raised.value.details()
    rule.max_from_amount = 10**9  # at most 10**15 credited: fits one ledger transfer
    coalition.call("CreateConversionRule", pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule")))
