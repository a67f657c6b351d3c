"""Breakage allocated per agreement (DOMAIN.md "Expiry", "Settlement") and the finance report of
outstanding points, over gRPC against a real ledger whose clock the test moves.

The retailer's agreement gives it the breakage of the points it issued (rebated at its issue
price, EUR 0.0125, so 450 points are EUR 5.625 and round half-even to 5.62); the fuel station's
leaves it to the operator (EUR 0.00). Figures of the first period:
  retailer: issued 1,000 (12.50), breakage expired 700 - reinstated 250 = 450 (-5.62)   net  6.88
  fuel:     issued 505 + 40 (5.45), breakage expired 505, kept by the operator (0.00)   net  5.45
  hotel:    redeemed 300 (-2.40)                                                        net -2.40
  operator net = 6.88 + 5.45 - 2.40 = 9.93
PTS liability: 1,545 issued - 300 redeemed - 1,205 expired + 250 reinstated = 290 = the wallets.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import replace
from zoneinfo import ZoneInfo

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.db import Database, DatabaseOptions, migrate
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from services.ledger import store as ledger_store
from services.settlement import agreements, periods, wire
from services.settlement.context import SettlementContext
from services.settlement.ledger_client import LedgerClient
from services.settlement.server import MIGRATIONS, VERSION_TABLE
from tests.settlement import scripted_month as month
from tests.support.tls import transport as tls_transport

DAY_US = 86_400_000_000
EARN, REDEEM, REVERSAL = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REDEEM, lpb.TRANSFER_CODE_REVERSAL
BREAKAGE = spb.STATEMENT_LINE_KIND_BREAKAGE


@pytest.fixture
def clock(monkeypatch):
    """Moves the ledger's clock forward; restored after the test."""

    class Clock:
        def advance(self, microseconds: int) -> None:
            monkeypatch.setattr(ledger_store, "clock_offset_us", ledger_store.clock_offset_us + microseconds)

    monkeypatch.setattr(ledger_store, "clock_offset_us", 0)
    return Clock()


def _agreements(settlement, valid_from_us: int) -> dict[str, spb.PriceAgreement]:
    retailer = month.agreement("retailer-v1", "retailer", valid_from_us, [("PTS", "0.0125", "0.0080")])
    retailer.breakage_owner = spb.BREAKAGE_OWNER_ISSUING_PARTNER
    stored = {}
    for message in [retailer, *month.base_agreements(valid_from_us)[1:]]:  # fuel and hotel: the default owner
        stored[message.partner_id] = settlement.SetPriceAgreement(
            spb.SetPriceAgreementRequest(agreement=message)
        ).agreement
    return stored


def _expiry_of(ledger, wallet_id: str) -> lpb.Transfer:
    entries = ledger.ListAccountEntries(lpb.ListAccountEntriesRequest(account_id=wallet_id), timeout=10).entries
    (expiry,) = [e.transfer for e in entries if e.transfer.code == lpb.TRANSFER_CODE_EXPIRY]
    return expiry


def _expire_and_reinstate(ledger, clock, reinstate: int) -> lpb.Transfer:
    """Earn, redeem, let both wallets' points expire; reinstate `reinstate` of m1's. Returns m1's expiry."""
    policy = lpb.ExpiryPolicy(currency_code="PTS", kind=lpb.EXPIRY_POLICY_KIND_FIXED, months=1)
    ledger.SetExpiryPolicy(lpb.SetExpiryPolicyRequest(policy=policy), timeout=10)
    month.transfer(ledger, "e1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", EARN, partner="retailer")
    month.transfer(ledger, "e2", "issuance:PTS:fuel", "wallet:PTS:m2", 505, "PTS", EARN, partner="fuel")
    month.transfer(ledger, "r1", "wallet:PTS:m1", "redemption:PTS:hotel", 300, "PTS", REDEEM, partner="hotel")
    clock.advance(3 * DAY_US)  # the expiry pass records the notices (points expire a notice period after)
    ledger.RunExpiry(lpb.RunExpiryRequest(), timeout=60)
    clock.advance(59 * DAY_US)  # past the lots' month and their notice period
    assert ledger.RunExpiry(lpb.RunExpiryRequest(), timeout=60).amount_expired == 700 + 505
    expiry = _expiry_of(ledger, "wallet:PTS:m1")
    assert expiry.metadata.partner_id == "retailer"
    if reinstate:
        clock.advance(10 * DAY_US)
        _reinstate(ledger, expiry, reinstate)
    return expiry


def _reinstate(ledger, expiry: lpb.Transfer, amount: int) -> None:
    reinstatement_id = f"reinstate-{amount}"
    month.transfer(
        ledger,
        reinstatement_id,
        "breakage:PTS",
        "wallet:PTS:m1",
        amount,
        "PTS",
        REVERSAL,
        reverses_transfer_id=expiry.id,
    )


def _period(period_id: str, start: int, end: int) -> spb.PeriodSelector:
    return spb.PeriodSelector(
        period_id=period_id, start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
    )


def _breakage_line(settlement: spb.PeriodSettlement, partner_id: str) -> spb.StatementLine:
    (statement,) = [s for s in settlement.statements if s.partner_id == partner_id]
    (line,) = [line for line in statement.lines if line.kind == BREAKAGE]
    return line


def test_breakage_is_rebated_to_an_issuing_partner_and_kept_by_the_operator_and_the_books_still_close(
    settlement, ledger_stub, clock
):
    month.setup_ledger(ledger_stub)
    start = month.tick()
    stored = _agreements(settlement, start - 3_600_000_000)
    assert stored["retailer"].breakage_owner == spb.BREAKAGE_OWNER_ISSUING_PARTNER
    assert stored["fuel"].breakage_owner == spb.BREAKAGE_OWNER_OPERATOR  # unset reads as the operator
    _expire_and_reinstate(ledger_stub, clock, reinstate=250)
    month.transfer(ledger_stub, "e3", "issuance:PTS:fuel", "wallet:PTS:m2", 40, "PTS", EARN, partner="fuel")
    end = month.tick() + ledger_store.clock_offset_us
    clock.advance(1_000_000)  # the ledger's clock is past the period's end
    period = _period("p1", start, end)

    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period)).settlement
    closed = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period)).settlement
    again = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period))
    stored_period = settlement.GetPeriod(spb.GetPeriodRequest(period_id="p1")).settlement
    assert not again.closed_now and again.settlement == closed == stored_period
    for result in (preview, closed):
        retailer = _breakage_line(result, "retailer")
        assert (retailer.expired_quantity, retailer.reinstated_quantity, retailer.quantity) == (700, 250, 450)
        assert (retailer.unit_price, retailer.amount_cents) == ("0.0125", -562)  # 562.5 cents, half-even
        assert retailer.breakage_owner == spb.BREAKAGE_OWNER_ISSUING_PARTNER
        fuel = _breakage_line(result, "fuel")
        assert (fuel.expired_quantity, fuel.reinstated_quantity, fuel.quantity) == (505, 0, 505)
        assert (fuel.unit_price, fuel.amount_cents, fuel.breakage_owner) == ("0", 0, spb.BREAKAGE_OWNER_OPERATOR)
        assert {s.partner_id: s.net_cents for s in result.statements} == {
            "retailer": 1250 - 562,
            "fuel": 545,
            "hotel": -240,
        }
        assert result.netting.operator_net_cents == result.netting.operator_net_from_lines_cents == 993
        assert result.netting.balanced
        (pts,) = [rf for rf in result.roll_forwards if rf.currency_code == "PTS"]
        assert (pts.issued, pts.redeemed, pts.expired, pts.reinstated, pts.closing_outstanding) == (
            1545,
            300,
            1205,
            250,
            290,
        )
    # The retailer is paid its net (a debit of the operator's side is what the partner owes).
    (posted,) = ledger_stub.GetTransfers(lpb.GetTransfersRequest(ids=["settlement:p1:retailer"]), timeout=10).transfers
    assert (posted.debit_account_id, posted.amount) == ("settlement:EUR:retailer", 688)

    audit = settlement.Audit(spb.AuditRequest())
    assert list(audit.findings) == []
    assert {t.currency_code: t.amount for t in audit.wallet_totals}["PTS"] == 290

    report = settlement.GetOutstandingReport(spb.GetOutstandingReportRequest(currency_code="PTS"))
    (outstanding,) = report.currencies
    assert outstanding.open_lots_total == outstanding.wallet_balance_total == 290 and outstanding.balanced
    assert sum(b.amount for b in outstanding.age_buckets) == sum(r.amount for r in outstanding.expiry_rows) == 290
    assert [b.amount for b in outstanding.age_buckets] == [290, 0, 0, 0, 0, 0]

    rows = list(csv.DictReader(io.StringIO(_export(settlement, period, spb.REPORT_FORMAT_CSV).decode())))
    breakage_rows = {r["partner_id"]: r for r in rows if r["line_kind"] == "BREAKAGE"}
    columns = ("quantity", "expired_quantity", "reinstated_quantity", "amount_eur", "breakage_owner")
    assert {partner: tuple(row[c] for c in columns) for partner, row in breakage_rows.items()} == {
        "retailer": ("450", "700", "250", "-5.62", "ISSUING_PARTNER"),
        "fuel": ("505", "505", "0", "0.00", "OPERATOR"),
    }
    html = _export(settlement, period, spb.REPORT_FORMAT_HTML).decode()
    assert "Breakage rebated to the partner at its issue price: expired 700 - reinstated 250" in html
    assert "Breakage kept by the operator: expired 505 - reinstated 0" in html
    pdf = _export(settlement, period, spb.REPORT_FORMAT_PDF, "retailer")
    assert pdf.startswith(b"%PDF")


def _export(settlement, period, fmt, partner_id="") -> bytes:
    request = spb.ExportReportRequest(period=period, format=fmt, partner_id=partner_id)
    return settlement.ExportReport(request).content


def test_a_reinstatement_in_a_later_period_reduces_that_periods_breakage_line_below_zero(
    settlement, ledger_stub, clock
):
    """Expired in p1 (rebated), reinstated in p2: p2's line nets to -250 and the retailer pays the rebate back."""
    month.setup_ledger(ledger_stub)
    start = month.tick()
    _agreements(settlement, start - 3_600_000_000)
    expiry = _expire_and_reinstate(ledger_stub, clock, reinstate=0)
    middle = month.tick() + ledger_store.clock_offset_us
    clock.advance(DAY_US)
    first = settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p1", start, middle))).settlement
    rebated = _breakage_line(first, "retailer")
    assert (rebated.quantity, rebated.amount_cents) == (700, -875)
    _reinstate(ledger_stub, expiry, 250)
    end = month.tick() + ledger_store.clock_offset_us
    clock.advance(1_000_000)
    second = settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p2", middle, end))).settlement
    line = _breakage_line(second, "retailer")
    assert (line.expired_quantity, line.reinstated_quantity, line.quantity) == (0, 250, -250)
    assert line.amount_cents == 312  # 312.5 cents, half-even; positive: the retailer pays it back
    assert [s.partner_id for s in second.statements] == ["retailer"]
    assert second.netting.balanced and second.netting.operator_net_cents == 312
    (pts,) = [rf for rf in second.roll_forwards if rf.currency_code == "PTS"]
    assert (pts.opening_outstanding, pts.reinstated, pts.closing_outstanding) == (0, 250, 250)
    audit = settlement.Audit(spb.AuditRequest())
    assert list(audit.findings) == []
    assert {t.currency_code: t.amount for t in audit.wallet_totals}["PTS"] == 250


def test_breakage_owner_is_part_of_an_agreements_content_and_a_bad_one_is_refused(settlement):
    message = month.agreement("fuel-v1", "fuel", 1_000_000, [("PTS", "0.0100", "0.0080")])
    assert settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message)).created
    message.breakage_owner = spb.BREAKAGE_OWNER_OPERATOR  # the same content as unset
    assert not settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message)).created
    message.breakage_owner = spb.BREAKAGE_OWNER_ISSUING_PARTNER
    with pytest.raises(grpc.RpcError) as reused:
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info_of(reused.value).reason == "ID_REUSED_WITH_DIFFERENT_CONTENT"
    bad = month.agreement("fuel-v2", "fuel", 2_000_000, [("PTS", "0.0100", "0.0080")])
    bad.breakage_owner = 99
    with pytest.raises(grpc.RpcError) as refused:
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=bad))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(refused.value).reason == "INVALID_BREAKAGE_OWNER"
    listed = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest(partner_id="fuel")).agreements
    assert [(a.agreement_id, a.breakage_owner) for a in listed] == [("fuel-v1", spb.BREAKAGE_OWNER_OPERATOR)]


def test_an_issuing_partner_owner_without_a_price_for_the_currency_blocks_the_close(settlement, ledger_stub, clock):
    month.setup_ledger(ledger_stub)
    start = month.tick()
    _agreements(settlement, start - 3_600_000_000)
    # The hotel owns the breakage of its HOTELPTS from now on, but prices no HOTELPTS points.
    hotel = month.agreement("hotel-v2", "hotel", start, [("PTS", "0.0100", "0.0080")])
    hotel.breakage_owner = spb.BREAKAGE_OWNER_ISSUING_PARTNER
    settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=hotel))
    policy = lpb.ExpiryPolicy(currency_code="HOTELPTS", kind=lpb.EXPIRY_POLICY_KIND_FIXED, months=1)
    ledger_stub.SetExpiryPolicy(lpb.SetExpiryPolicyRequest(policy=policy), timeout=10)
    ledger_stub.CreateAccounts(
        lpb.CreateAccountsRequest(
            accounts=[
                lpb.Account(
                    id="breakage:HOTELPTS",
                    currency_code="HOTELPTS",
                    normal_side=lpb.ACCOUNT_SIDE_CREDIT,
                    owner_id="operator",
                    kind="operator_breakage",
                )
            ]
        ),
        timeout=10,
    )
    month.transfer(ledger_stub, "h1", "issuance:HOTELPTS:hotel", "wallet:HOTELPTS:m3", 80, "HOTELPTS", EARN)
    clock.advance(3 * DAY_US)  # notice first
    ledger_stub.RunExpiry(lpb.RunExpiryRequest(), timeout=60)
    clock.advance(59 * DAY_US)
    assert ledger_stub.RunExpiry(lpb.RunExpiryRequest(), timeout=60).amount_expired == 80
    end = month.tick() + ledger_store.clock_offset_us
    # The preview leaves the unpriced breakage out and names it; the close refuses the period.
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=_period("p1", start, end)))
    assert [(w.kind, w.partner_id, w.currency_code) for w in preview.warnings] == [
        (spb.PERIOD_WARNING_KIND_PRICE_MISSING, "hotel", "HOTELPTS")
    ]
    with pytest.raises(grpc.RpcError) as refused:
        settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p1", start, end)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info_of(refused.value)
    assert (info.reason, info.metadata["partner_id"], info.metadata["currency_code"]) == (
        "PRICE_MISSING",
        "hotel",
        "HOTELPTS",
    )


def test_the_outstanding_report_and_the_finance_cli_show_the_check(
    settlement, settlement_server, ledger_stub, clock, monkeypatch, capsys
):
    from services.settlement import cli

    month.setup_ledger(ledger_stub)
    _expire_and_reinstate(ledger_stub, clock, reinstate=100)
    clock.advance(35 * DAY_US)  # the reinstated points were credited 107 days ago: 3 to 6 months old
    month.transfer(ledger_stub, "e3", "issuance:PTS:fuel", "wallet:PTS:m2", 40, "PTS", EARN, partner="fuel")
    report = settlement.GetOutstandingReport(spb.GetOutstandingReportRequest())
    totals = {c.currency_code: (c.open_lots_total, c.wallet_balance_total, c.balanced) for c in report.currencies}
    assert totals["PTS"] == (140, 140, True)
    (pts,) = [c for c in report.currencies if c.currency_code == "PTS"]
    assert [b.amount for b in pts.age_buckets] == [40, 100, 0, 0, 0, 0]  # reinstated points keep their credit's age
    audit = settlement.Audit(spb.AuditRequest())
    assert {t.currency_code: t.amount for t in audit.wallet_totals}["PTS"] == 140

    monkeypatch.setenv("COALITION_SETTLEMENT_ADDRESS", settlement_server.address)
    monkeypatch.setenv("COALITION_ADMIN_API_KEY", "test-admin-key-settlement")
    capsys.readouterr()
    assert cli.main(["outstanding", "--currency", "PTS"]) == 0
    text = capsys.readouterr().out
    assert "PTS: open lots 140, member wallets 140 (agree)" in text
    assert "  36+" in text and "of which inactivity" in text
    assert cli.main(["outstanding", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    pts_rows = [r for r in rows if r["currency_code"] == "PTS"]
    assert sum(int(r["amount"]) for r in pts_rows if r["dimension"] == "age_months") == 140
    assert sum(int(r["amount"]) for r in pts_rows if r["dimension"] == "expiry_month") == 140
    assert [(r["bucket"], r["amount"]) for r in pts_rows if r["dimension"] == "total"] == [
        ("open_lots", "140"),
        ("member_wallets", "140"),
        ("difference", "0"),
    ]
    assert cli.main(["outstanding", "--currency", "NOPE"]) == 2
    assert "CURRENCY_NOT_FOUND" in capsys.readouterr().err
    assert cli.main(["outstanding", "--as-of", "2999-01-01T00:00:00+00:00"]) == 2
    assert "AS_OF_IN_FUTURE" in capsys.readouterr().err
    for bad in ("pts", "P"):
        with pytest.raises(grpc.RpcError) as refused:
            settlement.GetOutstandingReport(spb.GetOutstandingReportRequest(currency_code=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class HidingBreakageLedgerClient(LedgerClient):
    """Hides an expiry and a reinstatement from every read, as if they committed just after the close's reads."""

    def __init__(self, address: str, transport, hidden: list[lpb.Transfer]) -> None:
        super().__init__(address, transport)
        self.hidden = hidden

    async def activity(self, start_us, end_us, account_ids, *original_time_bounds):
        lines, last_sequence = await super().activity(start_us, end_us, account_ids, *original_time_bounds)
        adjusted = []
        for line in lines:
            for transfer in self.hidden:
                if line.code != lpb.TransferCode.Name(transfer.code).removeprefix("TRANSFER_CODE_"):
                    continue
                if line.account_id == transfer.credit_account_id:
                    line = replace(line, credits=line.credits - transfer.amount)
                elif line.account_id == transfer.debit_account_id:
                    line = replace(line, debits=line.debits - transfer.amount)
            adjusted.append(line)
        return adjusted, min(last_sequence, self.hidden[0].commit_sequence - 1)

    async def breakage(self, start_us, end_us):
        return [], 0

    async def trial_balance(self):
        response = await super().trial_balance()
        response.commit_sequence = min(response.commit_sequence, self.hidden[0].commit_sequence - 1)
        return response


def test_an_expiry_and_a_reinstatement_committed_after_the_close_are_prior_period_breakage(
    settlement_database_url, ledger_server, ledger_stub, clock
):
    month.setup_ledger(ledger_stub)
    database = Database(DatabaseOptions(url=settlement_database_url, pool_size=2))
    migrate(database, MIGRATIONS, VERSION_TABLE)

    async def scenario():
        real = LedgerClient(ledger_server.address, tls_transport())
        context = SettlementContext(database, real, ZoneInfo("Europe/Amsterdam"), 0, 0)
        start = month.tick()
        retailer = month.agreement("retailer-v1", "retailer", start - 1, [("PTS", "0.0125", "0.0080")])
        retailer.breakage_owner = spb.BREAKAGE_OWNER_ISSUING_PARTNER
        await agreements.set_price_agreement(context, wire.agreement_from_pb(retailer))
        policy = lpb.ExpiryPolicy(currency_code="PTS", kind=lpb.EXPIRY_POLICY_KIND_FIXED, months=1)
        ledger_stub.SetExpiryPolicy(lpb.SetExpiryPolicyRequest(policy=policy), timeout=10)
        month.transfer(ledger_stub, "e1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", EARN)
        clock.advance(3 * DAY_US)  # notice first
        ledger_stub.RunExpiry(lpb.RunExpiryRequest(), timeout=60)
        clock.advance(59 * DAY_US)
        ledger_stub.RunExpiry(lpb.RunExpiryRequest(), timeout=60)
        expiry = _expiry_of(ledger_stub, "wallet:PTS:m1")
        clock.advance(DAY_US)
        _reinstate(ledger_stub, expiry, 400)
        (reinstatement,) = ledger_stub.GetTransfers(
            lpb.GetTransfersRequest(ids=["reinstate-400"]), timeout=10
        ).transfers
        end = month.tick() + ledger_store.clock_offset_us
        hiding = SettlementContext(
            database,
            HidingBreakageLedgerClient(ledger_server.address, tls_transport(), [expiry, reinstatement]),
            context.time_zone,
            0,
            0,
        )
        first, _ = await periods.close_period(hiding, "p1", start, end)
        assert [line.kind.value for line in first.statement("retailer").lines] == ["POINTS_ISSUED"]
        second_end = month.tick() + ledger_store.clock_offset_us
        clock.advance(1_000_000)
        second, _ = await periods.close_period(context, "p2", end, second_end)
        (line,) = second.statement("retailer").lines
        assert (line.kind.value, line.prior_period_adjustment) == ("BREAKAGE", True)
        assert (line.expired_quantity, line.reinstated_quantity, line.quantity, line.amount_cents) == (
            1000,
            400,
            600,
            -750,
        )
        assert second.netting.balanced
        (pts,) = [rf for rf in second.roll_forwards if rf.currency_code == "PTS"]
        assert (pts.opening_outstanding, pts.expired, pts.reinstated, pts.closing_outstanding) == (1000, 1000, 400, 400)
        await real.close()

    try:
        asyncio.run(scenario())
    finally:
        database.dispose()
