"""Point-of-sale operations over real gRPC against real ledger and partners servers."""

from __future__ import annotations

import concurrent.futures
import uuid

import grpc

from coalition.partners.v1 import partners_pb2 as pb
from services.common.timeconv import timestamp_from_micros
from tests.partners.conftest import DAY_US, unique

OK = grpc.StatusCode


def test_earn_issues_points_and_a_retry_changes_nothing(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    response, request = coalition.earn(shop, member_id, [1000, 999])
    assert response.pricing.points == 9  # 19.99 EUR at 1 point per 2 EUR, rounded down once
    assert sum(line.points for line in response.pricing.lines) == 9
    again = coalition.call("Earn", request, shop.key)
    assert again == response
    assert coalition.balance(member_id).posted == 9


def test_earn_by_card_alias(coalition):
    shop = coalition.register_partner()
    member_id, card = coalition.enroll()
    request = pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(alias=pb.Alias(kind=pb.ALIAS_KIND_CARD, value=card)),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=2000)],
    )
    assert coalition.call("Earn", request, shop.key).member_id == member_id


def test_earn_request_id_reused_with_other_content_is_refused(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    _, request = coalition.earn(shop, member_id, [1000])
    request.lines[0].amount = 5000
    assert coalition.error("Earn", request, shop.key) == (OK.ALREADY_EXISTS, "ID_REUSED_WITH_DIFFERENT_CONTENT")
    assert coalition.balance(member_id).posted == 5


def test_a_receipt_earns_once(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    _, request = coalition.earn(shop, member_id, [1000])
    request.request_id = unique("earn")
    assert coalition.error("Earn", request, shop.key) == (OK.ALREADY_EXISTS, "RECEIPT_ALREADY_EARNED")


def test_retry_after_client_timeout_posts_once(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    request = pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
    )
    try:
        coalition.call("Earn", request, shop.key, timeout=0.001)
    except grpc.RpcError as error:
        assert error.code() == OK.DEADLINE_EXCEEDED
    coalition.call("Earn", request, shop.key)
    coalition.call("Earn", request, shop.key)
    assert coalition.balance(member_id).posted == 20


def test_quote_earn_writes_nothing(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    quote = coalition.call(
        "QuoteEarn",
        pb.QuoteEarnRequest(
            point_of_sale=shop.pos(),
            member=pb.MemberIdentity(member_id=member_id),
            lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=10_000)],
        ),
        shop.key,
    )
    assert quote.pricing.points == 50
    assert coalition.balance(member_id).posted == 0


def test_earn_rule_edges_exclusion_cap_promotion_window(coalition):
    now = coalition.clock()
    shop = coalition.register_partner(
        excluded_categories=["tobacco"],
        category_multipliers=[pb.CategoryMultiplier(category="fresh", multiplier="2")],
        cap_points_per_transaction=100,
        promotion=pb.Promotion(
            kind=pb.PROMOTION_KIND_FIXED_BONUS,
            bonus_points=10,
            threshold_amount=5000,
            start_time=timestamp_from_micros(now - DAY_US),
            end_time=timestamp_from_micros(now + DAY_US),
        ),
    )
    member_id, _ = coalition.enroll()
    response, _ = coalition.earn(shop, member_id, [9000], category="tobacco")
    assert response.pricing.points == 0 and response.pricing.lines[0].excluded
    response, _ = coalition.earn(shop, member_id, [5000], category="fresh")
    assert response.pricing.points == 50 + 10 and response.pricing.promotion_applied
    response, _ = coalition.earn(shop, member_id, [100_000])
    assert response.pricing.points == 100 and response.pricing.capped
    response, _ = coalition.earn(shop, member_id, [399])
    assert response.pricing.points == 1  # 1.995 rounds down
    assert coalition.balance(member_id).posted == 161


def test_bad_basket_is_invalid_argument_and_writes_nothing(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    request = pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=-5)],
    )
    assert coalition.error("Earn", request, shop.key) == (OK.INVALID_ARGUMENT, "INVALID_BASKET")
    request.lines[0].amount = 500
    request.request_id = "bad id with spaces"
    assert coalition.error("Earn", request, shop.key)[0] == OK.INVALID_ARGUMENT
    assert coalition.balance(member_id).posted == 0


def _authorize(coalition, partner, member_id, amount, request_id=None, timeout=0):
    return pb.AuthorizeRedemptionRequest(
        request_id=request_id or unique("hold"),
        point_of_sale=partner.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        currency_code="PTS",
        amount=amount,
        hold_timeout_seconds=timeout,
    )


def test_hold_then_partial_capture_releases_the_rest(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [20_000])  # 100 points
    request = _authorize(coalition, shop, member_id, 60)
    hold = coalition.call("AuthorizeRedemption", request, shop.key).redemption
    assert hold.state == pb.REDEMPTION_STATE_AUTHORIZED
    assert coalition.call("AuthorizeRedemption", request, shop.key).redemption.redemption_id == hold.redemption_id
    balance = coalition.balance(member_id)
    assert (balance.posted, balance.pending, balance.available) == (100, 60, 40)
    capture = pb.CaptureRedemptionRequest(request_id=unique("cap"), redemption_id=hold.redemption_id, amount=45)
    captured = coalition.call("CaptureRedemption", capture, shop.key).redemption
    assert captured.captured_amount == 45 and captured.state == pb.REDEMPTION_STATE_CAPTURED
    assert coalition.call("CaptureRedemption", capture, shop.key).redemption.captured_amount == 45
    balance = coalition.balance(member_id)
    assert (balance.posted, balance.pending, balance.available) == (55, 0, 55)
    second = pb.CaptureRedemptionRequest(request_id=unique("cap"), redemption_id=hold.redemption_id)
    assert coalition.error("CaptureRedemption", second, shop.key) == (OK.FAILED_PRECONDITION, "HOLD_ALREADY_CAPTURED")


def test_void_releases_the_hold(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [2_000])
    hold = coalition.call("AuthorizeRedemption", _authorize(coalition, shop, member_id, 10), shop.key).redemption
    void = pb.VoidRedemptionRequest(request_id=unique("void"), redemption_id=hold.redemption_id)
    assert coalition.call("VoidRedemption", void, shop.key).redemption.state == pb.REDEMPTION_STATE_VOIDED
    assert coalition.call("VoidRedemption", void, shop.key).redemption.state == pb.REDEMPTION_STATE_VOIDED
    assert coalition.balance(member_id).available == 10
    capture = pb.CaptureRedemptionRequest(request_id=unique("cap"), redemption_id=hold.redemption_id)
    assert coalition.error("CaptureRedemption", capture, shop.key) == (OK.FAILED_PRECONDITION, "HOLD_ALREADY_VOIDED")


def test_hold_beyond_available_is_refused_and_a_retry_says_the_same(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [2_000])
    request = _authorize(coalition, shop, member_id, 11)
    assert coalition.error("AuthorizeRedemption", request, shop.key) == (OK.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    assert coalition.error("AuthorizeRedemption", request, shop.key) == (OK.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")


def test_capture_after_hold_expiry_is_refused(coalition):
    import time

    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [2_000])
    hold = coalition.call("AuthorizeRedemption", _authorize(coalition, shop, member_id, 10, timeout=1), shop.key)
    look = pb.GetRedemptionRequest(redemption_id=hold.redemption.redemption_id)
    assert coalition.call("GetRedemption", look, shop.key).redemption.state == pb.REDEMPTION_STATE_AUTHORIZED
    time.sleep(1.6)
    # Nobody captured or voided it: reading it says EXPIRED, and the points are free again.
    expired = coalition.call("GetRedemption", look, shop.key).redemption
    assert (expired.state, expired.held_amount, expired.captured_amount) == (pb.REDEMPTION_STATE_EXPIRED, 10, 0)
    capture = pb.CaptureRedemptionRequest(request_id=unique("cap"), redemption_id=hold.redemption.redemption_id)
    assert coalition.error("CaptureRedemption", capture, shop.key) == (OK.FAILED_PRECONDITION, "HOLD_EXPIRED")
    assert coalition.balance(member_id).available == 10


def test_concurrent_redemptions_never_overspend(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [20_000])  # 100 points

    def attempt(_):
        try:
            coalition.call("AuthorizeRedemption", _authorize(coalition, shop, member_id, 30), shop.key)
            return True
        except grpc.RpcError as error:
            assert error.code() == OK.FAILED_PRECONDITION
            return False

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(12)))
    assert outcomes.count(True) == 3
    balance = coalition.balance(member_id)
    assert balance.pending == 90 and balance.available == 10


def test_full_return_reverses_exactly_what_was_earned(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    response, request = coalition.earn(shop, member_id, [333, 333, 334])  # 5 points over three lines
    assert response.pricing.points == 5
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=request.receipt_id, line_numbers=[1]
    )
    first = coalition.call("Return", back, shop.key)
    assert coalition.call("Return", back, shop.key) == first
    rest = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=request.receipt_id, line_numbers=[2, 3]
    )
    second = coalition.call("Return", rest, shop.key)
    assert first.earned_points_reversed + second.earned_points_reversed == 5
    assert coalition.balance(member_id).posted == 0
    again = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=request.receipt_id, line_numbers=[2]
    )
    assert coalition.error("Return", again, shop.key) == (OK.FAILED_PRECONDITION, "LINE_ALREADY_RETURNED")


def test_return_after_spending_reports_the_shortfall(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    _, request = coalition.earn(shop, member_id, [10_000])  # 50
    hold = coalition.call("AuthorizeRedemption", _authorize(coalition, shop, member_id, 40), shop.key).redemption
    coalition.call(
        "CaptureRedemption",
        pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=hold.redemption_id),
        shop.key,
    )
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=request.receipt_id, line_numbers=[1]
    )
    result = coalition.call("Return", back, shop.key)
    assert (result.earned_points_due, result.earned_points_reversed, result.shortfall_points) == (50, 10, 40)
    assert coalition.balance(member_id).posted == 0


def test_refund_of_points_spent_on_a_receipt(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [10_000])  # 50
    authorize = _authorize(coalition, shop, member_id, 30)
    hold = coalition.call("AuthorizeRedemption", authorize, shop.key).redemption
    coalition.call(
        "CaptureRedemption",
        pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=hold.redemption_id),
        shop.key,
    )
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=authorize.receipt_id, redeemed_refund_amount=20
    )
    result = coalition.call("Return", back, shop.key)
    assert result.redeemed_points_refunded == 20
    assert coalition.balance(member_id).posted == 40
    too_much = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=authorize.receipt_id, redeemed_refund_amount=11
    )
    assert coalition.error("Return", too_much, shop.key) == (OK.FAILED_PRECONDITION, "REFUND_EXCEEDS_REDEEMED")


def test_offline_batch_is_replay_safe_and_prices_at_the_original_time(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    now = coalition.clock()
    earns = []
    for index in range(3):
        earn = pb.EarnRequest(
            request_id=unique("off"),
            point_of_sale=shop.pos(),
            receipt_id=unique("r"),
            member=pb.MemberIdentity(member_id=member_id),
            lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=2000)],
        )
        earns.append(pb.OfflineEarn(earn=earn, occur_time=timestamp_from_micros(now - 3_600_000_000 * (index + 1))))
    stale = pb.OfflineEarn(earn=earns[0].earn, occur_time=timestamp_from_micros(now - 40 * DAY_US))
    stale.earn.request_id = unique("off")
    stale.earn.receipt_id = unique("r")
    batch = pb.UploadOfflineBatchRequest(earns=[*earns, stale])
    first = coalition.call("UploadOfflineBatch", batch, shop.key)
    assert (first.succeeded_count, first.failed_count) == (3, 1)
    assert first.results[3].error_reason == "OCCUR_TIME_TOO_OLD"
    second = coalition.call("UploadOfflineBatch", batch, shop.key)
    assert second.succeeded_count == 3
    assert coalition.balance(member_id).posted == 30


def test_suspended_partner_cannot_earn_or_redeem(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [2_000])
    coalition.call("SuspendPartner", pb.SuspendPartnerRequest(partner_id=shop.partner_id))
    earn = pb.EarnRequest(
        request_id=unique("e"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=2000)],
    )
    assert coalition.error("Earn", earn, shop.key) == (OK.FAILED_PRECONDITION, "PARTNER_SUSPENDED")
    hold = _authorize(coalition, shop, member_id, 5)
    assert coalition.error("AuthorizeRedemption", hold, shop.key) == (OK.FAILED_PRECONDITION, "PARTNER_SUSPENDED")
    coalition.call("ReactivatePartner", pb.ReactivatePartnerRequest(partner_id=shop.partner_id))
    assert coalition.call("Earn", earn, shop.key).pricing.points == 10


def _after_a_client_timeout(coalition, method, request, key):
    """Send with a deadline too short to be answered, then retry twice with the same request:
    both retries return the same outcome. The first send may or may not have been applied."""
    try:
        coalition.call(method, request, key, timeout=0.001)
    except grpc.RpcError as error:
        assert error.code() == OK.DEADLINE_EXCEEDED
    first = coalition.call(method, request, key)
    assert coalition.call(method, request, key) == first
    return first


def test_every_pos_mutation_retried_after_a_client_timeout_applies_once(coalition):
    shop = coalition.register_partner()
    enrolled = pb.EnrollMemberRequest(
        request_id=unique("enroll"), aliases=[pb.Alias(kind=pb.ALIAS_KIND_CARD, value=str(uuid.uuid4().int)[:16])]
    )
    member_id = _after_a_client_timeout(coalition, "EnrollMember", enrolled, shop.key).member.member_id
    _, earn = coalition.earn(shop, member_id, [20_000, 20_000])  # 200 points, 100 per line
    hold = _authorize(coalition, shop, member_id, 60)
    hold.receipt_id = earn.receipt_id
    redemption = _after_a_client_timeout(coalition, "AuthorizeRedemption", hold, shop.key).redemption
    assert coalition.balance(member_id).pending == 60
    capture = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=redemption.redemption_id, amount=50)
    assert _after_a_client_timeout(coalition, "CaptureRedemption", capture, shop.key).redemption.captured_amount == 50
    second = coalition.call("AuthorizeRedemption", _authorize(coalition, shop, member_id, 20), shop.key).redemption
    void = pb.VoidRedemptionRequest(request_id=unique("v"), redemption_id=second.redemption_id)
    assert _after_a_client_timeout(coalition, "VoidRedemption", void, shop.key).redemption.state == (
        pb.REDEMPTION_STATE_VOIDED
    )
    balance = coalition.balance(member_id)
    assert (balance.posted, balance.pending) == (150, 0)
    back = pb.ReturnRequest(
        request_id=unique("ret"),
        point_of_sale=shop.pos(),
        receipt_id=earn.receipt_id,
        line_numbers=[1],
        redeemed_refund_amount=50,
    )
    returned = _after_a_client_timeout(coalition, "Return", back, shop.key)
    assert (returned.earned_points_reversed, returned.redeemed_points_refunded) == (100, 50)
    offline = pb.EarnRequest(
        request_id=unique("off"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=2000)],
    )
    batch = pb.UploadOfflineBatchRequest(
        earns=[pb.OfflineEarn(earn=offline, occur_time=timestamp_from_micros(coalition.clock() - 3_600_000_000))]
    )
    assert _after_a_client_timeout(coalition, "UploadOfflineBatch", batch, shop.key).succeeded_count == 1
    assert coalition.balance(member_id).posted == 150 - 100 + 50 + 10
