"""Captures, voids, returns and conversions from many tills at once share partners transactions
(group commit) and ledger calls (the ledger client's merged CreateTransfers), balance reads share
ledger reads (merged GetBalances), and each caller still gets its own answer. The merge
statistics the service keeps show the sharing: before the merges every call had a transaction
and a ledger call of its own."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.partners import server
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread

CALLERS = 24


@pytest.fixture(params=["sqlite", "postgres"])
def coalition(request, tmp_path):
    ledger_url, ledger_cleanup = new_database_url(request.param, tmp_path, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = MovableClock()
    partners = start_partners_thread(partners_url, ledger.address, ADMIN_KEY, clock)
    client = Coalition(partners.address, clock, ledger.address)
    yield client, server._current
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()


def _all_at_once(calls) -> list:
    start = threading.Barrier(len(calls))

    def run(call):
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


class _Merges:
    """Transactions and ledger calls of the partners process from now on, by how many calls each carried."""

    def __init__(self, app) -> None:
        self.app = app
        self.groups = self._transactions()
        self.ledger_calls = Counter(app.ledger.merged_call_sizes)

    def _transactions(self) -> Counter[int]:
        # Group commit merges units of work; captures and voids also record a batch as one unit.
        resolutions = self.app.mergers.get("redemption resolution")
        return Counter(self.app.mergers["write"].group_sizes) + Counter(resolutions.batch_sizes if resolutions else {})

    def since(self) -> tuple[int, int]:
        """(the most calls one transaction recorded, the most calls one ledger call carried)."""
        groups = self._transactions() - self.groups
        ledger_calls = Counter(self.app.ledger.merged_call_sizes) - self.ledger_calls
        return max(groups, default=0), max(ledger_calls, default=0)


def test_concurrent_captures_voids_returns_and_conversions_share_transactions_and_ledger_calls(coalition):
    client, app = coalition
    shop = client.register_partner()
    members = [client.enroll()[0] for _ in range(CALLERS)]
    receipts = [client.earn(shop, member_id, [10_000])[1].receipt_id for member_id in members]  # 50 points each

    def hold(member_id: str, receipt_id: str) -> str:
        request = pb.AuthorizeRedemptionRequest(
            request_id=unique("h"),
            point_of_sale=shop.pos(),
            receipt_id=receipt_id,
            member=pb.MemberIdentity(member_id=member_id),
            currency_code="PTS",
            amount=10,
        )
        return client.call("AuthorizeRedemption", request, shop.key).redemption.redemption_id

    holds = [hold(member_id, receipt_id) for member_id, receipt_id in zip(members, receipts, strict=True)]

    def settle(index: int):
        if index % 2:
            request = pb.VoidRedemptionRequest(request_id=unique("v"), redemption_id=holds[index])
            return client.call("VoidRedemption", request, shop.key).redemption.state
        request = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=holds[index])
        return client.call("CaptureRedemption", request, shop.key).redemption.state

    merges = _Merges(app)
    states = _all_at_once([lambda index=index: settle(index) for index in range(CALLERS)])
    expected = [pb.REDEMPTION_STATE_VOIDED if index % 2 else pb.REDEMPTION_STATE_CAPTURED for index in range(CALLERS)]
    assert states == expected
    most_per_transaction, most_per_ledger_call = merges.since()
    assert most_per_transaction >= 2 and most_per_ledger_call >= 2, merges.since()
    assert [client.balance(member_id).posted for member_id in members[:2]] == [40, 50]

    reads = Counter(app.ledger.merged_balance_read_sizes)
    balances = _all_at_once([lambda member_id=member_id: client.balance(member_id).posted for member_id in members])
    assert balances == [40 if index % 2 == 0 else 50 for index in range(CALLERS)]
    assert max(Counter(app.ledger.merged_balance_read_sizes) - reads, default=0) >= 2

    def give_back(receipt_id: str) -> int:
        request = pb.ReturnRequest(
            request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=receipt_id, line_numbers=[1]
        )
        return client.call("Return", request, shop.key).earned_points_reversed

    merges = _Merges(app)
    reversed_points = _all_at_once([lambda receipt_id=receipt_id: give_back(receipt_id) for receipt_id in receipts])
    assert reversed_points == [50] * CALLERS  # the whole basket; a captured tender is refunded first
    most_per_transaction, most_per_ledger_call = merges.since()
    assert most_per_transaction >= 2 and most_per_ledger_call >= 2, merges.since()

    hotel_currency, airline_currency = (f"{prefix}{uuid.uuid4().hex[:8].upper()}" for prefix in "HA")
    hotel = client.register_partner(pb.PARTNER_KIND_HOTEL, currency=hotel_currency, base_rate="100")
    airline = client.register_partner(pb.PARTNER_KIND_AIRLINE, currency=airline_currency, base_rate="1")
    rule = pb.ConversionRule(
        from_currency_code=hotel.currency,
        to_currency_code=airline.currency,
        from_units=3,
        to_units=1,
        min_from_amount=3_000,
        step_from_amount=3_000,
        max_from_amount=300_000,
    )
    client.call("CreateConversionRule", pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule")))
    quotes = []
    for member_id in members:
        client.earn(hotel, member_id, [3_000])  # 3,000 hotel points
        quote = pb.QuoteConversionRequest(
            member=pb.MemberIdentity(member_id=member_id),
            from_currency_code=hotel.currency,
            to_currency_code=airline.currency,
            from_amount=3_000,
        )
        quotes.append(client.call("QuoteConversion", quote, hotel.key).quote.quote_id)

    def convert(quote_id: str):
        request = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote_id)
        done = client.call("ExecuteConversion", request, hotel.key).conversion
        return done.state, done.quote.to_amount

    merges = _Merges(app)
    answers = _all_at_once([lambda quote_id=quote_id: convert(quote_id) for quote_id in quotes])
    assert answers == [(pb.CONVERSION_STATE_COMPLETED, 1_000)] * CALLERS
    most_per_transaction, most_per_ledger_call = merges.since()
    assert most_per_transaction >= 2 and most_per_ledger_call >= 2, merges.since()
    assert client.balance(members[0], airline.currency).posted == 1_000
