"""An earn the ledger refuses is final (the ledger remembers a refused transfer id forever):
it is marked failed with the reason, every retry answers with that failure, and the
recovery pass neither retries nor re-logs it."""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2
from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import Unavailable, error_info_of
from services.partners import earning, model, server
from services.partners.ledger_client import Failure
from services.partners.server import PartnersSettings, start
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread


@pytest.fixture(params=["sqlite", "postgres"])
def refusing(request, tmp_path):
    """Real servers whose ledger client refuses (or cannot reach the ledger for) chosen earns."""
    ledger_url, ledger_cleanup = new_database_url(request.param, tmp_path, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    settings = dataclasses.replace(
        PartnersSettings.from_env(),
        database_url=partners_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger.address,
        admin_api_key=ADMIN_KEY,
        grpc_grace_period_seconds=1,
        pending_earn_recovery_interval_seconds=0.1,
    )
    clock = MovableClock()
    partners = ThreadedServer(lambda: start(settings, clock))
    app = server._current
    real = app.ledger.create_transfers
    outcomes: dict[str, str] = {}  # earn id -> "refuse" or "unavailable"
    attempts: dict[str, int] = {}

    async def create_transfers(transfers):
        outcome = outcomes.get(transfers[0].id)
        if outcome is None:
            return await real(transfers)
        attempts[transfers[0].id] = attempts.get(transfers[0].id, 0) + 1
        if outcome == "unavailable":
            raise Unavailable("LEDGER_UNAVAILABLE", "the ledger is unreachable")
        return [
            ledger_pb2.CreateTransferResult(
                status=ledger_pb2.ITEM_STATUS_FAILED, failure_reason=Failure.FAILURE_REASON_CURRENCY_MISMATCH
            )
        ]

    app.ledger.create_transfers = create_transfers
    client = Coalition(partners.address, clock, ledger.address)
    yield client, outcomes, attempts
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()


def _earn_request(shop, member_id):
    return pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
    )


def _refusal(client, request, key):
    with pytest.raises(grpc.RpcError) as raised:
        client.call("Earn", request, key)
    info = error_info_of(raised.value)
    return raised.value.code(), info.reason, info.metadata["failure"]


def test_a_refused_earn_is_failed_and_its_retry_returns_the_same_failure(refusing):
    client, outcomes, attempts = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])  # 5 points; the wallet exists
    request = _earn_request(shop, member_id)
    earn_id = model.earn_transfer_id(shop.partner_id, request.request_id)
    outcomes[earn_id] = "refuse"
    refused = (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _refusal(client, request, shop.key) == refused
    assert _refusal(client, request, shop.key) == refused
    assert attempts[earn_id] == 1  # the retry answered from the failed earn, without the ledger
    assert client.balance(member_id).posted == 5
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=request.receipt_id, line_numbers=[1]
    )
    assert client.error("Return", back, shop.key) == (grpc.StatusCode.FAILED_PRECONDITION, "EARN_FAILED")


def test_a_pending_earn_the_ledger_refuses_is_failed_by_recovery_once(refusing):
    """The ledger was unreachable, the till gave up; when the recovery pass finds the ledger
    refusing the earn it marks it failed, and later passes leave it alone."""
    client, outcomes, attempts = refusing
    shop = client.register_partner()
    member_id, _ = client.enroll()
    client.earn(shop, member_id, [1000])
    request = _earn_request(shop, member_id)
    earn_id = model.earn_transfer_id(shop.partner_id, request.request_id)
    outcomes[earn_id] = "unavailable"
    assert client.error("Earn", request, shop.key) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    outcomes[earn_id] = "refuse"
    attempts[earn_id] = 0
    client.clock.advance(earning.PENDING_EARN_AGE_SECONDS_MIN + 1)
    deadline = time.monotonic() + 15
    while attempts[earn_id] == 0:
        assert time.monotonic() < deadline, "the recovery pass never tried the earn"
        time.sleep(0.05)
    time.sleep(0.5)  # several more recovery passes
    assert attempts[earn_id] == 1
    refused = (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED", "CURRENCY_MISMATCH")
    assert _refusal(client, request, shop.key) == refused
    assert attempts[earn_id] == 1
    assert client.balance(member_id).posted == 5
