"""Prior-period adjustments: a transfer committed inside a closed window after the close read.

A real ledger cannot be made to race on demand, so the first close reads the ledger through a
client that hides the last transfer of the window (exactly what a close sees when that
transfer's transaction commits just after the close's reads). The next close must find it by
commit sequence and price it as a prior-period adjustment, at the agreement valid then.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.db import Database, DatabaseOptions, migrate
from services.common.errors import FailedPrecondition
from services.common.timeconv import timestamp_from_micros
from services.settlement import agreements, model, periods, store, wire
from services.settlement.context import SettlementContext
from services.settlement.ledger_client import LedgerClient
from services.settlement.server import MIGRATIONS, VERSION_TABLE
from tests.settlement import scripted_month as month
from tests.support.tls import transport as tls_transport


class HidingLedgerClient(LedgerClient):
    """Hides one posted EARN transfer from activity reads, as if it committed after them."""

    def __init__(self, address: str, transport, hidden: lpb.Transfer) -> None:
        super().__init__(address, transport)
        self.hidden = hidden

    async def activity(self, start_us, end_us, account_ids, *original_time_bounds):
        lines, last_sequence = await super().activity(start_us, end_us, account_ids, *original_time_bounds)
        commit_us = self.hidden.commit_time.seconds * 1_000_000 + self.hidden.commit_time.nanos // 1000
        if not start_us <= commit_us < end_us:
            return lines, last_sequence
        adjusted = []
        for line in lines:
            if line.account_id == self.hidden.debit_account_id and line.code == "EARN":
                line = replace(line, debits=line.debits - self.hidden.amount)
            adjusted.append(line)
        return adjusted, min(last_sequence, self.hidden.commit_sequence - 1)

    async def trial_balance(self):
        # Committed after the close's reads: the sequence read at the close does not include it yet.
        response = await super().trial_balance()
        response.commit_sequence = min(response.commit_sequence, self.hidden.commit_sequence - 1)
        return response


@pytest.fixture
def settlement_database(settlement_database_url):
    database = Database(DatabaseOptions(url=settlement_database_url, pool_size=2))
    migrate(database, MIGRATIONS, VERSION_TABLE)
    yield database
    database.dispose()


def test_transfer_committed_after_the_close_is_a_prior_period_adjustment(
    settlement_database, ledger_server, ledger_stub
):
    month.setup_ledger(ledger_stub)

    async def scenario():
        real = LedgerClient(ledger_server.address, tls_transport())
        context = SettlementContext(settlement_database, real, ZoneInfo("Europe/Amsterdam"), 0, 0)

        start = month.tick()
        for message in month.base_agreements(start - 1):
            await agreements.set_price_agreement(context, wire.agreement_from_pb(message))
        month.transfer(
            ledger_stub,
            "a1",
            "issuance:PTS:retailer",
            "wallet:PTS:m1",
            1000,
            "PTS",
            lpb.TRANSFER_CODE_EARN,
            partner="retailer",
        )
        racing = month.transfer(
            ledger_stub,
            "a2",
            "issuance:PTS:retailer",
            "wallet:PTS:m1",
            300,
            "PTS",
            lpb.TRANSFER_CODE_EARN,
            partner="retailer",
        )
        end = month.tick()
        hiding = SettlementContext(
            settlement_database,
            HidingLedgerClient(ledger_server.address, tls_transport(), racing),
            context.time_zone,
            0,
            0,
        )
        first, _ = await periods.close_period(hiding, "p1", start, end)
        assert first.statement("retailer").net_cents == 1000
        assert first.last_commit_sequence == racing.commit_sequence - 1
        # A price change after p1: the late transfer is still priced by the agreement valid at its commit time.
        await agreements.set_price_agreement(
            context,
            model.PriceAgreement(
                "retailer-v2",
                "retailer",
                end,
                (model.PointPrice("PTS", model.parse_price("0.05"), model.parse_price("0")),),
            ),
        )
        month.transfer(
            ledger_stub,
            "a3",
            "issuance:PTS:retailer",
            "wallet:PTS:m1",
            10,
            "PTS",
            lpb.TRANSFER_CODE_EARN,
            partner="retailer",
        )
        second_end = month.tick()
        second, _ = await periods.close_period(context, "p2", end, second_end)
        lines = [
            (line.prior_period_adjustment, line.quantity, line.amount_cents)
            for line in second.statement("retailer").lines
        ]
        assert lines == [(False, 10, 50), (True, 300, 300)]
        assert second.netting.balanced
        # The liability continues where p1 closed; the late points move it in p2, which bills them,
        # and p2 still closes at the sum of the member wallets.
        (first_pts,) = [rf for rf in first.roll_forwards if rf.currency_code == "PTS"]
        (second_pts,) = [rf for rf in second.roll_forwards if rf.currency_code == "PTS"]
        assert first_pts.closing_outstanding == 1000
        assert (second_pts.opening_outstanding, second_pts.issued, second_pts.closing_outstanding) == (1000, 310, 1310)
        assert second_pts.identity_holds()
        (wallet,) = ledger_stub.GetBalances(lpb.GetBalancesRequest(account_ids=["wallet:PTS:m1"]), timeout=10).balances
        assert wallet.posted == second_pts.closing_outstanding
        await real.close()

    asyncio.run(scenario())


class FailingPostLedgerClient(LedgerClient):
    """Loses the connection when posting the nets, as a crash between freezing and posting would."""

    async def create_transfers(self, transfers):
        from services.common.errors import Unavailable

        raise Unavailable("LEDGER_UNAVAILABLE", "simulated outage while posting")


def test_interrupted_close_is_finished_by_closing_again(settlement_database, ledger_server, ledger_stub):
    from services.common.errors import FailedPrecondition, Unavailable

    month.setup_ledger(ledger_stub)

    async def scenario():
        real = LedgerClient(ledger_server.address, tls_transport())
        failing = FailingPostLedgerClient(ledger_server.address, tls_transport())
        context = SettlementContext(settlement_database, real, ZoneInfo("Europe/Amsterdam"), 0, 0)
        broken = SettlementContext(settlement_database, failing, context.time_zone, 0, 0)
        start = month.tick()
        for message in month.base_agreements(start - 1):
            await agreements.set_price_agreement(context, wire.agreement_from_pb(message))
        month.transfer(ledger_stub, "b1", "issuance:PTS:fuel", "wallet:PTS:m2", 700, "PTS", lpb.TRANSFER_CODE_EARN)
        end = month.tick()
        with pytest.raises(Unavailable):
            await periods.close_period(broken, "p1", start, end)
        # The figures are frozen but not posted: the next period must wait.
        month.transfer(ledger_stub, "b2", "issuance:PTS:fuel", "wallet:PTS:m2", 5, "PTS", lpb.TRANSFER_CODE_EARN)
        later = month.tick()
        with pytest.raises(FailedPrecondition) as caught:
            await periods.close_period(context, "p2", end, later)
        assert caught.value.reason == "PREVIOUS_PERIOD_NOT_CLOSED"
        finished, closed_now = await periods.close_period(context, "p1", start, end)
        assert closed_now and finished.closed and finished.statement("fuel").net_cents == 700
        posted = ledger_stub.GetTransfers(lpb.GetTransfersRequest(ids=["settlement:p1:fuel"]), timeout=10)
        assert [t.amount for t in posted.transfers] == [700]
        await real.close()
        await failing.close()

    asyncio.run(scenario())


def test_a_quiet_first_period_covers_the_history_before_it(settlement, ledger_stub):
    """The first closed period has no settlement activity: it must still record the sequence it
    covered, or the next close re-streams all earlier history as prior-period adjustments."""

    def window(period_id, start_us, end_us):
        return spb.PeriodSelector(
            period_id=period_id, start_time=timestamp_from_micros(start_us), end_time=timestamp_from_micros(end_us)
        )

    month.setup_ledger(ledger_stub)
    for message in month.base_agreements(month.now_us() - 3_600_000_000):
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))
    history = month.transfer(
        ledger_stub, "old", "issuance:PTS:fuel", "wallet:PTS:m1", 700, "PTS", lpb.TRANSFER_CODE_EARN
    )
    start = month.tick()
    end = month.tick()
    quiet = settlement.ClosePeriod(spb.ClosePeriodRequest(period=window("q1", start, end))).settlement
    assert not quiet.statements and quiet.last_commit_sequence >= history.commit_sequence
    month.transfer(ledger_stub, "new", "issuance:PTS:fuel", "wallet:PTS:m1", 10, "PTS", lpb.TRANSFER_CODE_EARN)
    second_end = month.tick()
    second = settlement.ClosePeriod(spb.ClosePeriodRequest(period=window("q2", end, second_end))).settlement
    (fuel,) = second.statements
    assert [(line.prior_period_adjustment, line.quantity, line.amount_cents) for line in fuel.lines] == [
        (False, 10, 10)
    ]


def test_an_agreement_recorded_while_a_close_computes_is_priced_in(settlement_database, ledger_server, ledger_stub):
    """SetPriceAgreement lands between the close's figures and its freeze: the close sees the new
    version (it computes again) instead of freezing figures that ignore a version inside its window."""
    month.setup_ledger(ledger_stub)
    earn = lpb.TRANSFER_CODE_EARN

    async def scenario():
        real = LedgerClient(ledger_server.address, tls_transport())
        context = SettlementContext(settlement_database, real, ZoneInfo("Europe/Amsterdam"), 0, 0)
        start = month.tick()
        for message in month.base_agreements(start - 1):
            await agreements.set_price_agreement(context, wire.agreement_from_pb(message))
        month.transfer(ledger_stub, "c1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", earn)
        middle = month.tick()
        month.transfer(ledger_stub, "c2", "issuance:PTS:retailer", "wallet:PTS:m1", 500, "PTS", earn)
        end = month.tick()
        racing = model.PriceAgreement(
            "retailer-v2",
            "retailer",
            middle,
            (model.PointPrice("PTS", model.parse_price("0.05"), model.parse_price("0")),),
        )
        original = periods.compute_settlement
        calls = []

        async def compute_then_race(*args, **kwargs):
            computed = await original(*args, **kwargs)
            calls.append(computed)
            if len(calls) == 1:
                await agreements.set_price_agreement(context, racing)
            return computed

        periods.compute_settlement = compute_then_race
        try:
            closed, _ = await periods.close_period(context, "p1", start, end)
        finally:
            periods.compute_settlement = original
        assert len(calls) == 2
        assert [
            (line.quantity, line.agreement_id, line.amount_cents) for line in closed.statement("retailer").lines
        ] == [
            (1000, "retailer-v1", 1000),
            (500, "retailer-v2", 2500),
        ]
        await real.close()

    asyncio.run(scenario())


def test_an_agreement_waits_for_a_freeze_in_progress_and_is_refused(settlement_database):
    """The other order: a close holds the lock while freezing; SetPriceAgreement waits for it and
    then sees the frozen period (without the lock, PostgreSQL READ COMMITTED would not)."""
    frozen = threading.Event()

    def freeze(connection):
        store.lock_agreements_and_periods(connection)
        store.insert_closing_period(connection, model.PeriodSettlement("p1", 0, 10**15, False, (), (), 0), 1)
        frozen.set()
        time.sleep(0.5)

    holder = threading.Thread(target=settlement_database.write, args=(freeze,))
    holder.start()
    assert frozen.wait(10)
    context = SettlementContext(settlement_database, None, ZoneInfo("Europe/Amsterdam"))
    inside = model.PriceAgreement("late-v1", "fuel", 10**14, (model.PointPrice("PTS", model.parse_price("1"), 0),))
    with pytest.raises(FailedPrecondition) as caught:
        asyncio.run(agreements.set_price_agreement(context, inside))
    holder.join()
    assert caught.value.reason == "PERIOD_ALREADY_CLOSED"
