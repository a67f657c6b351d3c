"""The server's recovery pass finishes what a client gave up on: returns and conversions that
were recorded but never posted, and authorized holds whose timeout passed. It sends exactly the
transfer ids the client's own retry would, so a late retry gets the same answer and nothing
moves twice; a refusal by the ledger is final and recorded with its reason."""

from __future__ import annotations

import dataclasses
import time
import uuid

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import Unavailable, error_info_of
from services.common.ledger_client import Failure
from services.partners import model, recovery, server
from services.partners.store import redemptions as redemption_store
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread
from tests.support.tls import channel as tls_channel

Code = grpc.StatusCode
WAIT_SECONDS_MAX = 15


@dataclasses.dataclass
class Recovering:
    """Real servers whose ledger client misbehaves for chosen transfer ids (the first of a call):
    "unavailable" (nothing reaches the ledger), "lose_answer" (the ledger applies the call, the
    answer is lost) or "refuse" (the ledger refuses the chain)."""

    client: Coalition
    app: object
    outcomes: dict[str, str]
    attempts: dict[str, int]

    def record(self, redemption_id: str):
        return self.app.database.read(lambda connection: redemption_store.get_redemption(connection, redemption_id))

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS_MAX
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    def ledger_transfers(self, ids: list[str]) -> dict[str, ledger_pb2.Transfer]:
        with tls_channel(self.client.ledger_address) as channel:
            ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
            found = ledger.GetTransfers(ledger_pb2.GetTransfersRequest(ids=ids), timeout=10).transfers
        return {transfer.id: transfer for transfer in found}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def recovering(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("recovery")
    ledger_url, ledger_cleanup = new_database_url(request.param, directory, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, directory, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = MovableClock()
    partners = start_partners_thread(
        partners_url, ledger.address, ADMIN_KEY, clock, pending_earn_recovery_interval_seconds=0.1
    )
    app = server._current
    real = app.ledger.create_transfers
    outcomes: dict[str, str] = {}
    attempts: dict[str, int] = {}

    async def create_transfers(transfers):
        outcome = outcomes.get(transfers[0].id)
        if outcome is None:
            return await real(transfers)
        attempts[transfers[0].id] = attempts.get(transfers[0].id, 0) + 1
        if outcome == "unavailable":
            raise Unavailable("LEDGER_UNAVAILABLE", "the ledger is unreachable")
        if outcome == "lose_answer":
            await real(transfers)
            raise Unavailable("LEDGER_UNAVAILABLE", "the ledger's answer was lost")
        root = ledger_pb2.CreateTransferResult(
            status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_CURRENCY_MISMATCH
        )
        linked = ledger_pb2.CreateTransferResult(
            status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_LINKED_EVENT_FAILED
        )
        return [root] + [linked] * (len(transfers) - 1)

    app.ledger.create_transfers = create_transfers
    client = Coalition(partners.address, clock, ledger.address)
    yield Recovering(client, app, outcomes, attempts)
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()


def _failure(client: Coalition, method: str, request, key: str) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as raised:
        client.call(method, request, key)
    info = error_info_of(raised.value)
    return raised.value.code(), info.reason, info.metadata.get("failure", "")


def _captured_receipt(client: Coalition, shop, member_id: str) -> tuple[pb.EarnRequest, str]:
    """A receipt that earned 100 points over two lines and was partly paid with 30 points."""
    _, earn = client.earn(shop, member_id, [10_000, 10_000])
    hold = pb.AuthorizeRedemptionRequest(
        request_id=unique("h"),
        point_of_sale=shop.pos(),
        receipt_id=earn.receipt_id,
        member=pb.MemberIdentity(member_id=member_id),
        currency_code="PTS",
        amount=30,
    )
    redemption_id = client.call("AuthorizeRedemption", hold, shop.key).redemption.redemption_id
    capture = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=redemption_id)
    client.call("CaptureRedemption", capture, shop.key)
    return earn, redemption_id


def _given_up_return(recovering: Recovering, shop, earn: pb.EarnRequest) -> tuple[pb.ReturnRequest, str]:
    """A return of line 1 with a 30-point refund that was recorded but whose chain never reached
    the ledger: the till got UNAVAILABLE and never retried."""
    back = pb.ReturnRequest(
        request_id=unique("ret"),
        point_of_sale=shop.pos(),
        receipt_id=earn.receipt_id,
        line_numbers=[1],
        redeemed_refund_amount=30,
    )
    first_leg = model.return_transfer_id(shop.partner_id, back.request_id, 1, "refund0")
    recovering.outcomes[first_leg] = "unavailable"
    assert recovering.client.error("Return", back, shop.key) == (Code.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    return back, first_leg


def test_a_return_of_a_receipt_whose_earn_is_not_yet_recorded_as_posted_settles_it_first(recovering):
    """The earn reached the ledger but its answer was lost, so partners still has it pending:
    a return of the receipt settles the earn with the ledger (as a retry of the earn would, same
    transfer id) and is then decided against it, instead of refusing the return."""
    client = recovering.client
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    _, request = client.earn(shop, member_id, [10_000], request_id=unique("e"), receipt_id=unique("r"))
    lost = pb.EarnRequest()
    lost.CopyFrom(request)
    lost.request_id, lost.receipt_id = unique("lost"), unique("r")
    earn_id = model.earn_transfer_id(shop.partner_id, lost.request_id)
    recovering.outcomes[earn_id] = "lose_answer"
    assert client.error("Earn", lost, shop.key) == (Code.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    del recovering.outcomes[earn_id]
    assert client.balance(member_id).posted == 5 + 50 + 50  # in the ledger, pending here
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=lost.receipt_id, line_numbers=[1]
    )
    assert client.call("Return", back, shop.key).earned_points_reversed == 50
    assert client.balance(member_id).posted == 5 + 50
    assert client.call("Earn", lost, shop.key).pricing.points == 50  # the earn's retry: the first answer


def test_a_return_whose_client_gave_up_is_posted_by_the_server_with_its_own_ids(recovering):
    client = recovering.client
    shop = client.register_partner()
    member_id, _ = client.enroll()
    earn, _ = _captured_receipt(client, shop, member_id)
    assert client.balance(member_id).posted == 70
    back, first_leg = _given_up_return(recovering, shop, earn)
    del recovering.outcomes[first_leg]
    time.sleep(0.3)  # several passes: a young return is left to its client's retry
    assert client.balance(member_id).posted == 70
    client.clock.advance(recovery.AGE_SECONDS_MIN + 1)
    recovering.wait_until(lambda: client.balance(member_id).posted == 70 + 30 - 50, "the return was never posted")
    earn_leg = model.return_transfer_id(shop.partner_id, back.request_id, 1, "earn")
    posted = recovering.ledger_transfers([first_leg, earn_leg])
    assert (posted[first_leg].amount, posted[earn_leg].amount) == (30, 50)
    # The till's late retry gets the same answer and moves nothing more.
    result = client.call("Return", back, shop.key)
    assert (result.earned_points_reversed, result.redeemed_points_refunded) == (50, 30)
    time.sleep(0.3)
    assert client.balance(member_id).posted == 50


def test_a_given_up_return_the_ledger_refuses_is_failed_and_releases_what_it_reserved(recovering):
    client = recovering.client
    shop = client.register_partner()
    member_id, _ = client.enroll()
    earn, redemption_id = _captured_receipt(client, shop, member_id)
    back, first_leg = _given_up_return(recovering, shop, earn)
    recovering.outcomes[first_leg] = "refuse"
    recovering.attempts[first_leg] = 0
    client.clock.advance(recovery.AGE_SECONDS_MIN + 1)
    recovering.wait_until(lambda: recovering.attempts[first_leg] > 0, "the recovery pass never tried the return")
    recovering.wait_until(lambda: recovering.record(redemption_id).refunded_amount == 0, "the refund stayed reserved")
    time.sleep(0.3)  # several more passes leave the failed return alone
    assert recovering.attempts[first_leg] == 1
    refused = (Code.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _failure(client, "Return", back, shop.key) == refused
    assert recovering.attempts[first_leg] == 1
    assert client.balance(member_id).posted == 70
    # The released line and refund are returnable under a new request.
    back.request_id = unique("ret")
    result = client.call("Return", back, shop.key)
    assert (result.earned_points_reversed, result.redeemed_points_refunded) == (50, 30)


@pytest.fixture
def programmes(recovering):
    """A hotel and an airline, a 3:1 hotel -> airline rule, and a member with 200,000 hotel points."""
    client = recovering.client
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
    member_id, _ = client.enroll()
    client.earn(hotel, member_id, [200_000])
    return hotel, airline, member_id


def _given_up_conversion(recovering: Recovering, hotel, airline, member_id: str):
    """An execution of a 60,000-point quote that was recorded but whose legs never reached the ledger."""
    quote = recovering.client.call(
        "QuoteConversion",
        pb.QuoteConversionRequest(
            member=pb.MemberIdentity(member_id=member_id),
            from_currency_code=hotel.currency,
            to_currency_code=airline.currency,
            from_amount=60_000,
        ),
        hotel.key,
    ).quote
    execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    out_leg = f"{model.conversion_id_for(hotel.partner_id, execute.request_id)}:out"
    recovering.outcomes[out_leg] = "unavailable"
    assert recovering.client.error("ExecuteConversion", execute, hotel.key) == (Code.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    return execute, out_leg


def test_a_conversion_whose_client_gave_up_completes_even_after_its_quote_expired(recovering, programmes):
    """The quote was valid when the execution was recorded, so the recorded execution completes
    (as a retry of it would) although the quote has expired by the time the server gets to it."""
    client = recovering.client
    hotel, airline, member_id = programmes
    execute, out_leg = _given_up_conversion(recovering, hotel, airline, member_id)
    del recovering.outcomes[out_leg]
    client.clock.advance(model.QUOTE_TTL_SECONDS + recovery.AGE_SECONDS_MIN + 1)
    recovering.wait_until(
        lambda: client.balance(member_id, airline.currency).posted == 20_000, "the conversion was never completed"
    )
    assert client.balance(member_id, hotel.currency).posted == 140_000
    in_leg = out_leg.removesuffix(":out") + ":in"
    posted = recovering.ledger_transfers([out_leg, in_leg])
    assert (posted[out_leg].amount, posted[in_leg].amount) == (60_000, 20_000)
    # The late retry answers COMPLETED with the same conversion and moves nothing more.
    done = client.call("ExecuteConversion", execute, hotel.key).conversion
    assert (done.conversion_id, done.state, done.quote.to_amount) == (
        out_leg.removesuffix(":out"),
        pb.CONVERSION_STATE_COMPLETED,
        20_000,
    )
    time.sleep(0.3)
    assert client.balance(member_id, airline.currency).posted == 20_000
    assert client.balance(member_id, hotel.currency).posted == 140_000


def test_a_given_up_conversion_the_ledger_refuses_is_failed_once(recovering, programmes):
    client = recovering.client
    hotel, airline, member_id = programmes
    execute, out_leg = _given_up_conversion(recovering, hotel, airline, member_id)
    recovering.outcomes[out_leg] = "refuse"
    recovering.attempts[out_leg] = 0
    client.clock.advance(recovery.AGE_SECONDS_MIN + 1)
    recovering.wait_until(lambda: recovering.attempts[out_leg] > 0, "the recovery pass never tried the conversion")
    time.sleep(0.3)
    assert recovering.attempts[out_leg] == 1
    refused = (Code.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _failure(client, "ExecuteConversion", execute, hotel.key) == refused
    assert recovering.attempts[out_leg] == 1
    assert client.balance(member_id, hotel.currency).posted == 200_000
    assert client.balance(member_id, airline.currency).posted == 0


def test_holds_past_their_timeout_are_recorded_as_the_ledger_reports_them(recovering):
    """Without anyone reading them: a hold nobody resolved becomes EXPIRED; a hold whose capture
    reached the ledger but whose answer was lost becomes CAPTURED, and that capture's retry then
    records its amount."""
    client = recovering.client
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [10_000])  # 50 points

    def authorize(amount: int, timeout_seconds: int) -> str:
        hold = pb.AuthorizeRedemptionRequest(
            request_id=unique("h"),
            point_of_sale=shop.pos(),
            receipt_id=unique("r"),
            member=pb.MemberIdentity(member_id=member_id),
            currency_code="PTS",
            amount=amount,
            hold_timeout_seconds=timeout_seconds,
        )
        return client.call("AuthorizeRedemption", hold, shop.key).redemption.redemption_id

    forgotten = authorize(10, 1)
    captured = authorize(20, 600)
    capture = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=captured)
    capture_id = model.capture_transfer_id(shop.partner_id, capture.request_id)
    recovering.outcomes[capture_id] = "lose_answer"
    assert client.error("CaptureRedemption", capture, shop.key) == (Code.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    del recovering.outcomes[capture_id]
    assert recovering.record(captured).state == "authorized"
    recovering.wait_until(lambda: recovering.record(forgotten).state == "expired", "the hold stayed authorized")
    assert recovering.record(captured).state == "authorized"  # its timeout has not passed
    client.clock.advance(600 + 1)
    recovering.wait_until(lambda: recovering.record(captured).state == "captured", "the capture was never recorded")
    assert client.balance(member_id).posted == 50 - 20
    redemption = client.call("CaptureRedemption", capture, shop.key).redemption
    assert (redemption.state, redemption.captured_amount) == (pb.REDEMPTION_STATE_CAPTURED, 20)
    assert recovering.record(captured).capture_transfer_id == capture_id
    look = pb.GetRedemptionRequest(redemption_id=forgotten)
    assert client.call("GetRedemption", look, shop.key).redemption.state == pb.REDEMPTION_STATE_EXPIRED
