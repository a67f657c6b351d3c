"""The ledger goes away mid-flow: callers get UNAVAILABLE and a retry with the same ids is safe."""

from __future__ import annotations

import time

import grpc

from coalition.ledger.v1 import ledger_pb2
from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from services.common.ledger_client import Failure
from services.common.timeconv import timestamp_from_micros
from services.partners import recovery, server
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import free_port, start_ledger_thread, start_partners_thread


def test_earn_while_the_ledger_is_down_is_unavailable_and_the_retry_posts_once(tmp_path):
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger_address = f"127.0.0.1:{free_port()}"
    ledger = start_ledger_thread(ledger_url, listen_address=ledger_address)
    clock = MovableClock()
    partners = start_partners_thread(partners_url, ledger_address, ADMIN_KEY, clock, ledger_deadline_ms=500)
    client = Coalition(partners.address, clock, ledger_address)
    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        client.earn(shop, member_id, [1000])  # the wallet exists now
        ledger.stop()
        request = pb.EarnRequest(
            request_id=unique("earn"),
            point_of_sale=shop.pos(),
            receipt_id=unique("r"),
            member=pb.MemberIdentity(member_id=member_id),
            lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
        )
        try:
            client.call("Earn", request, shop.key)
            raise AssertionError("the earn cannot succeed without a ledger")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info_of(error).reason == "LEDGER_UNAVAILABLE"
        ledger = start_ledger_thread(ledger_url, listen_address=ledger_address)
        deadline = time.monotonic() + 15
        while True:
            try:
                response = client.call("Earn", request, shop.key)
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.pricing.points == 20
        client.call("Earn", request, shop.key)
        assert client.balance(member_id).posted == 5 + 20
    finally:
        client.close()
        partners.stop()
        ledger.stop()


def test_a_new_earn_rule_version_applies_from_its_start(coalition):
    shop = coalition.register_partner(base_rate="1")
    member_id, _ = coalition.enroll()
    assert coalition.earn(shop, member_id, [1000])[0].pricing.points == 10
    coalition.create_earn_rule(shop.partner_id, base_rate="2", valid_from_time=timestamp_from_micros(coalition.clock()))
    response, _ = coalition.earn(shop, member_id, [1000])
    assert (response.pricing.points, response.pricing.rule_version) == (20, 2)
    rules = coalition.call("ListEarnRules", pb.ListEarnRulesRequest(partner_id=shop.partner_id), shop.key).rules
    assert [rule.version for rule in rules] == [2, 1]


def _posted_once_reachable(client: Coalition, member_id: str) -> int:
    """The member's posted PTS, waiting out the partners server's reconnection to a restarted ledger."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return client.balance(member_id).posted
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
            time.sleep(0.1)


def _earn_retrying(client, shop, member_id) -> None:
    """An earn of 5 points, retried with the same request as a till would: the short ledger
    deadline this test needs for its outage can also expire on a first call in a busy CI run."""
    request = pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=1000)],
    )
    for attempt in range(1, 6):
        try:
            assert client.call("Earn", request, shop.key).pricing.points == 5
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 5:
                raise


def test_an_earn_whose_client_gave_up_is_posted_by_the_server(tmp_path):
    """The ledger is down, the earn is recorded but not posted, and the till never retries:
    the server's recovery pass posts it once the ledger is back, exactly once."""
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger_address = f"127.0.0.1:{free_port()}"
    ledger = start_ledger_thread(ledger_url, listen_address=ledger_address)
    clock = MovableClock()
    partners = start_partners_thread(
        partners_url,
        ledger_address,
        ADMIN_KEY,
        clock,
        ledger_deadline_ms=500,
        pending_earn_recovery_interval_seconds=0.2,
    )
    client = Coalition(partners.address, clock, ledger_address)
    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        _earn_retrying(client, shop, member_id)  # 5 points; the wallet exists now
        ledger.stop()
        request = pb.EarnRequest(
            request_id=unique("earn"),
            point_of_sale=shop.pos(),
            receipt_id=unique("r"),
            member=pb.MemberIdentity(member_id=member_id),
            lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
        )
        try:
            client.call("Earn", request, shop.key)
            raise AssertionError("the earn cannot succeed without a ledger")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        ledger = start_ledger_thread(ledger_url, listen_address=ledger_address)
        assert _posted_once_reachable(client, member_id) == 5  # young earns are left to the client's retry
        clock.advance(recovery.AGE_SECONDS_MIN + 1)
        deadline = time.monotonic() + 15
        while _posted_once_reachable(client, member_id) != 25:
            assert time.monotonic() < deadline, "the recorded earn was never posted"
            time.sleep(0.1)
        # A late retry by the till returns the same earn and posts nothing more.
        assert client.call("Earn", request, shop.key).pricing.points == 20
        time.sleep(0.5)
        assert client.balance(member_id).posted == 25
    finally:
        client.close()
        partners.stop()
        ledger.stop()


def test_a_return_the_ledger_refuses_gives_back_its_lines_and_refund(tmp_path):
    """If the ledger refuses a return's chain, nothing moved: the lines and the refundable points
    it reserved are released, a retry of the same request says the same, and a new return works."""
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = MovableClock()
    partners = start_partners_thread(partners_url, ledger.address, ADMIN_KEY, clock)
    app = server._current
    client = Coalition(partners.address, clock, ledger.address)
    real_create_transfers = app.ledger.create_transfers

    async def refuse_returns(transfers):
        if not any(transfer.id.startswith("return:") for transfer in transfers):
            return await real_create_transfers(transfers)
        first = ledger_pb2.CreateTransferResult(
            status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_REVERSAL_EXCEEDS_ORIGINAL
        )
        rest = ledger_pb2.CreateTransferResult(
            status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_LINKED_EVENT_FAILED
        )
        return [first] + [rest] * (len(transfers) - 1)

    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        _, earn = client.earn(shop, member_id, [10_000, 10_000])  # 100 points over two lines
        hold = pb.AuthorizeRedemptionRequest(
            request_id=unique("h"),
            point_of_sale=shop.pos(),
            receipt_id=earn.receipt_id,
            member=pb.MemberIdentity(member_id=member_id),
            currency_code="PTS",
            amount=30,
        )
        redemption = client.call("AuthorizeRedemption", hold, shop.key).redemption
        capture = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=redemption.redemption_id)
        client.call("CaptureRedemption", capture, shop.key)
        back = pb.ReturnRequest(
            request_id=unique("ret"),
            point_of_sale=shop.pos(),
            receipt_id=earn.receipt_id,
            line_numbers=[1],
            redeemed_refund_amount=30,
        )
        app.ledger.create_transfers = refuse_returns
        assert client.error("Return", back, shop.key) == (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED")
        assert client.error("Return", back, shop.key) == (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED")
        app.ledger.create_transfers = real_create_transfers
        assert client.balance(member_id).posted == 70
        look = pb.GetRedemptionRequest(redemption_id=redemption.redemption_id)
        assert client.call("GetRedemption", look, shop.key).redemption.refunded_amount == 0
        # The same lines and refund are still returnable under a new request.
        back.request_id = unique("ret")
        result = client.call("Return", back, shop.key)
        assert (result.earned_points_reversed, result.redeemed_points_refunded) == (50, 30)
        assert client.balance(member_id).posted == 70 + 30 - 50
        assert client.call("GetRedemption", look, shop.key).redemption.refunded_amount == 30
    finally:
        app.ledger.create_transfers = real_create_transfers
        client.close()
        partners.stop()
        ledger.stop()
