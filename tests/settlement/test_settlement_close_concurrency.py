"""Concurrent closes of one period: exactly one caller is told `closed_now: true`.

A tool that sends statements when `closed_now` is true must send them once, however many
closes of the same period race, on one settlement server or on two sharing the database.
"""

from __future__ import annotations

import threading

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.timeconv import timestamp_from_micros
from services.settlement.server import start
from tests.settlement import scripted_month as month
from tests.settlement.conftest import AdminStub, settlement_settings
from tests.support.servers import ThreadedServer
from tests.support.tls import channel as tls_channel

CALLERS = 6
ROUNDS = 4


@pytest.fixture
def second_settlement_server(settlement_database_url, ledger_server, settlement_server):
    # Started after the first, so the schema is migrated; the same database, another process's view.
    server = ThreadedServer(lambda: start(settlement_settings(settlement_database_url, ledger_server.address)))
    yield server
    server.stop()


def _close_concurrently(stubs, period: spb.PeriodSelector) -> list[bool]:
    barrier = threading.Barrier(len(stubs))
    answers: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller(stub):
        barrier.wait()
        try:
            response = stub.ClosePeriod(spb.ClosePeriodRequest(period=period))
        except grpc.RpcError as error:
            with lock:
                errors.append(error)
            return
        with lock:
            answers.append(response.closed_now)

    threads = [threading.Thread(target=caller, args=(stub,)) for stub in stubs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return answers


def test_concurrent_closes_of_one_period_answer_closed_now_exactly_once(
    settlement_server, second_settlement_server, ledger_stub
):
    month.setup_ledger(ledger_stub)
    with (
        tls_channel(settlement_server.address) as first,
        tls_channel(second_settlement_server.address) as second,
    ):
        stubs = [AdminStub(first if index % 2 == 0 else second) for index in range(CALLERS)]
        start_us = month.tick()
        for message in month.base_agreements(start_us - 1):
            stubs[0].SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))
        for round_number in range(ROUNDS):
            month.transfer(
                ledger_stub,
                f"earn-{round_number}",
                "issuance:PTS:retailer",
                "wallet:PTS:m1",
                100 + round_number,
                "PTS",
                lpb.TRANSFER_CODE_EARN,
                partner="retailer",
            )
            end_us = month.tick()
            period = spb.PeriodSelector(
                period_id=f"race-{round_number}",
                start_time=timestamp_from_micros(start_us),
                end_time=timestamp_from_micros(end_us),
            )
            answers = _close_concurrently(stubs, period)
            assert sorted(answers) == [False] * (CALLERS - 1) + [True], (round_number, answers)
            again = stubs[1].ClosePeriod(spb.ClosePeriodRequest(period=period))
            assert again.closed_now is False
            (statement,) = [s for s in again.settlement.statements if s.partner_id == "retailer"]
            assert statement.net_cents == 100 + round_number  # 0.0100 EUR per point, posted once
            start_us = end_us
