"""Returns under concurrency and across members, over real gRPC against real ledger and
partners servers (SQLite and PostgreSQL): a line is returned and a spent point refunded at most
once however many returns race for it, and every refund goes back to whoever paid."""

from __future__ import annotations

import concurrent.futures
import uuid

import grpc

from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from tests.partners.conftest import unique

Code = grpc.StatusCode
RACERS = 8


def _race(coalition, shop, requests: list[pb.ReturnRequest]) -> list[pb.ReturnResponse | tuple[Code, str]]:
    def send(request: pb.ReturnRequest):
        try:
            return coalition.call("Return", request, shop.key)
        except grpc.RpcError as error:
            info = error_info_of(error)
            return error.code(), (info.reason if info else "")

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def _capture(coalition, shop, member_id: str, receipt_id: str, amount: int, currency: str = "PTS") -> str:
    hold = pb.AuthorizeRedemptionRequest(
        request_id=unique("hold"),
        point_of_sale=shop.pos(),
        receipt_id=receipt_id,
        member=pb.MemberIdentity(member_id=member_id),
        currency_code=currency,
        amount=amount,
    )
    redemption_id = coalition.call("AuthorizeRedemption", hold, shop.key).redemption.redemption_id
    capture = pb.CaptureRedemptionRequest(request_id=unique("capture"), redemption_id=redemption_id)
    coalition.call("CaptureRedemption", capture, shop.key)
    return redemption_id


def test_concurrent_returns_of_the_same_line_reverse_it_once(coalition):
    """Review proof: returns of one line under different request_ids all read the line as
    unreturned (READ COMMITTED, no lock) and each reversed it. The receipt is now locked first."""
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    _, earn = coalition.earn(shop, member_id, [10_000, 10_000])  # 50 + 50 points
    assert coalition.balance(member_id).available == 100
    requests = [
        pb.ReturnRequest(
            request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=earn.receipt_id, line_numbers=[1]
        )
        for _ in range(RACERS)
    ]
    outcomes = _race(coalition, shop, requests)
    done = [outcome for outcome in outcomes if isinstance(outcome, pb.ReturnResponse)]
    refused = [outcome for outcome in outcomes if not isinstance(outcome, pb.ReturnResponse)]
    assert len(done) == 1, outcomes
    assert done[0].earned_points_reversed == 50
    assert refused == [(Code.FAILED_PRECONDITION, "LINE_ALREADY_RETURNED")] * (RACERS - 1)
    assert coalition.balance(member_id).available == 50
    # The other line is still returnable, exactly once.
    rest = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=earn.receipt_id, line_numbers=[2]
    )
    assert coalition.call("Return", rest, shop.key).earned_points_reversed == 50
    assert coalition.balance(member_id).available == 0


def test_concurrent_refunds_of_the_same_points_refund_them_once(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [10_000])  # 50 points
    receipt_id = unique("r")
    _capture(coalition, shop, member_id, receipt_id, 30)
    assert coalition.balance(member_id).available == 20
    requests = [
        pb.ReturnRequest(
            request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=receipt_id, redeemed_refund_amount=30
        )
        for _ in range(RACERS)
    ]
    outcomes = _race(coalition, shop, requests)
    done = [outcome for outcome in outcomes if isinstance(outcome, pb.ReturnResponse)]
    assert len(done) == 1, outcomes
    assert done[0].redeemed_points_refunded == 30
    assert [outcome for outcome in outcomes if not isinstance(outcome, pb.ReturnResponse)] == [
        (Code.FAILED_PRECONDITION, "REFUND_EXCEEDS_REDEEMED")
    ] * (RACERS - 1)
    assert coalition.balance(member_id).available == 50


def _return(coalition, shop, receipt_id: str, lines: list[int], refund: int = 0) -> pb.ReturnRequest:
    return pb.ReturnRequest(
        request_id=unique("ret"),
        point_of_sale=shop.pos(),
        receipt_id=receipt_id,
        line_numbers=lines,
        redeemed_refund_amount=refund,
    )


def test_a_refund_goes_back_to_the_member_whose_points_paid(coalition):
    """Review proof: refund legs credited the earning member's wallet, so a receipt earned by A
    and partly paid with B's points could never be fully returned (REVERSAL_ACCOUNTS_MISMATCH)."""
    shop = coalition.register_partner()
    member_a, _ = coalition.enroll()
    member_b, _ = coalition.enroll()
    coalition.earn(shop, member_b, [10_000])  # B has 50 points
    _, earn = coalition.earn(shop, member_a, [10_000, 10_000])  # A earns 100 on the receipt
    _capture(coalition, shop, member_b, earn.receipt_id, 30)  # B pays 30 on the same receipt
    assert coalition.balance(member_b).available == 20
    response = coalition.call("Return", _return(coalition, shop, earn.receipt_id, [1, 2]), shop.key)
    assert (response.earned_points_reversed, response.shortfall_points) == (100, 0)
    assert (response.redeemed_points_refunded, response.refund_currency_code) == (30, "PTS")
    assert coalition.balance(member_a).available == 0
    assert coalition.balance(member_b).available == 50


def test_refunds_in_several_currencies_are_kept_apart(coalition):
    """Points of two currencies spent on one receipt are refunded each in its own currency and
    never summed as one unit; an amount to refund, which has no currency, is refused there."""
    currency = f"H{uuid.uuid4().hex[:8].upper()}"
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=currency, base_rate="1")
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [10_000])  # 50 PTS
    coalition.earn(hotel, member_id, [10_000])  # 100 of the hotel's currency
    _, earn = coalition.earn(hotel, member_id, [10_000, 10_000])  # 200 more on this receipt
    _capture(coalition, hotel, member_id, earn.receipt_id, 40, currency)
    _capture(coalition, hotel, member_id, earn.receipt_id, 20, "PTS")
    assert coalition.error("Return", _return(coalition, hotel, earn.receipt_id, [1], refund=10), hotel.key) == (
        Code.FAILED_PRECONDITION,
        "REFUND_CURRENCY_AMBIGUOUS",
    )
    response = coalition.call("Return", _return(coalition, hotel, earn.receipt_id, [1, 2]), hotel.key)
    assert (response.currency_code, response.earned_points_reversed) == (currency, 200)
    # The response carries one refund currency: the first refunded, with its own sum only.
    assert (response.refund_currency_code, response.redeemed_points_refunded) == (currency, 40)
    assert coalition.balance(member_id, currency).available == 100
    assert coalition.balance(member_id).available == 50
