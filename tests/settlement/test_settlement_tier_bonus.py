"""The tier bonus billed to its funder (DOMAIN.md "Tiers", "Settlement"), over gRPC against a real
ledger on SQLite and PostgreSQL: the month's earns carry their bonus in the ledger's metadata, as
partners writes them.

The retailer's agreement (recorded with coalition-finance set-agreement --tier-bonus-funder operator,
issue price EUR 0.0125) has the operator fund the bonus; the fuel station's leaves it with the
partner (the default). Figures of the period:
  retailer: issued 1,300 (16.25) - reversed 200 (-2.50); bonus issued 252 - reversed 50 = 202,
            credited 202 x 0.0125 = 2.525, half-even -2.52                             net 11.23
  fuel:     issued 505 (5.05) - reversed 105 (-1.05); bonus 101 - 21 = 80 at EUR 0.00   net  4.00
            (what it paid before funders existed: the bonus is inside the points issued)
  hotel:    redeemed 300 (-2.40)                                                        net -2.40
  operator net = 11.23 + 4.00 - 2.40 = 12.83
PTS liability: 1,805 issued - 305 reversed - 300 redeemed = 1,200 = the wallets (800 + 400).
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
from services.settlement import agreements, periods, wire
from services.settlement.context import SettlementContext
from services.settlement.ledger_client import LedgerClient
from services.settlement.server import MIGRATIONS, VERSION_TABLE
from tests.settlement import scripted_month as month
from tests.settlement.conftest import ADMIN_KEY
from tests.support.tls import transport as tls_transport

EARN, REDEEM, REVERSAL = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REDEEM, lpb.TRANSFER_CODE_REVERSAL
TIER_BONUS = spb.STATEMENT_LINE_KIND_TIER_BONUS
HOUR_US = 3_600_000_000


def _period(period_id: str, start: int, end: int) -> spb.PeriodSelector:
    return spb.PeriodSelector(
        period_id=period_id, start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
    )


def _lines(settlement: spb.PeriodSettlement, partner_id: str) -> list[tuple]:
    (statement,) = [s for s in settlement.statements if s.partner_id == partner_id]
    return [(spb.StatementLineKind.Name(line.kind), line.quantity, line.amount_cents) for line in statement.lines]


def _bonus_line(settlement: spb.PeriodSettlement, partner_id: str) -> spb.StatementLine:
    (statement,) = [s for s in settlement.statements if s.partner_id == partner_id]
    (line,) = [line for line in statement.lines if line.kind == TIER_BONUS]
    return line


def _earn(ledger, transfer_id, partner, wallet, amount, bonus):
    return month.transfer(
        ledger, transfer_id, f"issuance:PTS:{partner}", wallet, amount, "PTS", EARN, partner=partner,
        tier_bonus_points=bonus,
    )  # fmt: skip


def _return(ledger, transfer_id, partner, wallet, amount, bonus, earn_id):
    return month.transfer(
        ledger, transfer_id, wallet, f"issuance:PTS:{partner}", amount, "PTS", REVERSAL, partner=partner,
        tier_bonus_points=bonus, reverses_transfer_id=earn_id,
    )  # fmt: skip


def _use_cli(monkeypatch, settlement_server) -> None:
    monkeypatch.setenv("COALITION_SETTLEMENT_ADDRESS", settlement_server.address)
    monkeypatch.setenv("COALITION_ADMIN_API_KEY", ADMIN_KEY)


def _retailer_funded_by_the_operator(valid_from_us: int, capsys) -> None:
    from services.settlement import cli

    arguments = [
        "set-agreement",
        "--id=retailer-v1",
        "--partner=retailer",
        f"--valid-from={month.iso(valid_from_us)}",
        "--price=PTS:0.0125:0.0080",
        "--tier-bonus-funder=operator",
    ]
    assert cli.main(arguments) == 0
    assert capsys.readouterr().out == "recorded\n"


def test_an_operator_funded_bonus_is_credited_to_the_partner_and_a_partner_funded_one_bills_as_before(
    settlement, settlement_server, ledger_stub, monkeypatch, capsys
):
    from services.settlement import cli

    _use_cli(monkeypatch, settlement_server)
    month.setup_ledger(ledger_stub)
    start = month.tick()
    _retailer_funded_by_the_operator(start - HOUR_US, capsys)
    for message in month.base_agreements(start - HOUR_US)[1:]:  # fuel, hotel, airline: the default funder
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))
    listed = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest()).agreements
    assert {a.partner_id: a.tier_bonus_funder for a in listed} == {
        "retailer": spb.TIER_BONUS_FUNDER_OPERATOR,
        "fuel": spb.TIER_BONUS_FUNDER_PARTNER,  # unset reads as the partner
        "hotel": spb.TIER_BONUS_FUNDER_PARTNER,
        "airline": spb.TIER_BONUS_FUNDER_PARTNER,
    }
    _earn(ledger_stub, "e1", "retailer", "wallet:PTS:m1", 1000, 252)
    _earn(ledger_stub, "e2", "retailer", "wallet:PTS:m1", 300, 0)
    _return(ledger_stub, "e1-ret", "retailer", "wallet:PTS:m1", 200, 50, "e1")
    _earn(ledger_stub, "f1", "fuel", "wallet:PTS:m2", 505, 101)
    _return(ledger_stub, "f1-ret", "fuel", "wallet:PTS:m2", 105, 21, "f1")
    month.transfer(ledger_stub, "r1", "wallet:PTS:m1", "redemption:PTS:hotel", 300, "PTS", REDEEM, partner="hotel")
    end = month.tick()
    period = _period("p1", start, end)

    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period)).settlement
    closed = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period)).settlement
    again = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period))
    stored = settlement.GetPeriod(spb.GetPeriodRequest(period_id="p1")).settlement
    assert not again.closed_now and again.settlement == closed == stored
    # The preview's figures are the ones frozen (the close adds the settlement transfer ids).
    assert [(s.partner_id, list(s.lines), s.net_cents) for s in preview.statements] == [
        (s.partner_id, list(s.lines), s.net_cents) for s in closed.statements
    ]
    for result in (preview, closed):
        assert _lines(result, "retailer") == [
            ("STATEMENT_LINE_KIND_POINTS_ISSUED", 1300, 1625),
            ("STATEMENT_LINE_KIND_EARN_REVERSALS", 200, -250),
            ("STATEMENT_LINE_KIND_TIER_BONUS", 202, -252),  # 252.5 cents, half-even
        ]
        retailer = _bonus_line(result, "retailer")
        assert (retailer.tier_bonus_issued_quantity, retailer.tier_bonus_reversed_quantity) == (252, 50)
        assert (retailer.unit_price, retailer.tier_bonus_funder) == ("0.0125", spb.TIER_BONUS_FUNDER_OPERATOR)
        assert retailer.agreement_id == "retailer-v1"
        # The partner funds it: the issuance lines are what they were before funders existed.
        assert _lines(result, "fuel") == [
            ("STATEMENT_LINE_KIND_POINTS_ISSUED", 505, 505),
            ("STATEMENT_LINE_KIND_EARN_REVERSALS", 105, -105),
            ("STATEMENT_LINE_KIND_TIER_BONUS", 80, 0),
        ]
        fuel = _bonus_line(result, "fuel")
        assert (fuel.tier_bonus_issued_quantity, fuel.tier_bonus_reversed_quantity) == (101, 21)
        assert (fuel.unit_price, fuel.tier_bonus_funder) == ("0", spb.TIER_BONUS_FUNDER_PARTNER)
        assert {s.partner_id: s.net_cents for s in result.statements} == {
            "retailer": 1123,
            "fuel": 400,
            "hotel": -240,
        }
        assert result.netting.operator_net_cents == result.netting.operator_net_from_lines_cents == 1283
        assert result.netting.balanced
        (pts,) = [rf for rf in result.roll_forwards if rf.currency_code == "PTS"]
        assert (pts.issued, pts.earn_reversed, pts.redeemed, pts.closing_outstanding) == (1805, 305, 300, 1200)
    (posted,) = ledger_stub.GetTransfers(lpb.GetTransfersRequest(ids=["settlement:p1:retailer"]), timeout=10).transfers
    assert (posted.debit_account_id, posted.amount) == ("settlement:EUR:retailer", 1123)
    # The bonus points still exist in the wallets: the roll-forward closes at their sum.
    audit = settlement.Audit(spb.AuditRequest())
    assert list(audit.findings) == []
    assert {t.currency_code: t.amount for t in audit.wallet_totals}["PTS"] == 1200

    rows = list(csv.DictReader(io.StringIO(_export(settlement, period, spb.REPORT_FORMAT_CSV).decode())))
    columns = ("quantity", "tier_bonus_issued_quantity", "tier_bonus_reversed_quantity", "amount_eur")
    bonus_rows = {r["partner_id"]: r for r in rows if r["line_kind"] == "TIER_BONUS"}
    assert {p: (*(row[c] for c in columns), row["tier_bonus_funder"]) for p, row in bonus_rows.items()} == {
        "retailer": ("202", "252", "50", "-2.52", "OPERATOR"),
        "fuel": ("80", "101", "21", "0.00", "PARTNER"),
    }
    html = _export(settlement, period, spb.REPORT_FORMAT_HTML).decode()
    assert "Tier bonus funded by the operator (credited at the issue price): issued 252 - reversed 50" in html
    assert "Tier bonus funded by the partner (included in points issued): issued 101 - reversed 21" in html
    assert _export(settlement, period, spb.REPORT_FORMAT_PDF, "retailer").startswith(b"%PDF")

    assert cli.main(["preview", "p1", f"--start={month.iso(start)}", f"--end={month.iso(end)}"]) == 0
    text = capsys.readouterr().out
    assert (
        "  tier bonus retailer PTS: issued 252 - reversed 50 = 202, funded by the operator (credited at the issue"
        " price) (EUR -2,52)" in text
    )
    assert (
        "  tier bonus fuel PTS: issued 101 - reversed 21 = 80, funded by the partner (included in points issued)"
        in text
    )


def _export(settlement, period, fmt, partner_id="") -> bytes:
    request = spb.ExportReportRequest(period=period, format=fmt, partner_id=partner_id)
    return settlement.ExportReport(request).content


def test_a_bonus_returned_in_a_later_period_nets_that_periods_line_below_zero_and_the_credit_is_paid_back(
    settlement, settlement_server, ledger_stub, monkeypatch, capsys
):
    """Credited in p1, returned in p2 (at e1's agreement, p1's: the same version here; reversals
    are priced at their original price): p2's line is -40 bonus points, +0.50 for the retailer."""
    _use_cli(monkeypatch, settlement_server)
    month.setup_ledger(ledger_stub)
    start = month.tick()
    _retailer_funded_by_the_operator(start - HOUR_US, capsys)
    _earn(ledger_stub, "e1", "retailer", "wallet:PTS:m1", 1000, 252)
    middle = month.tick()
    first = settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p1", start, middle))).settlement
    assert _lines(first, "retailer") == [
        ("STATEMENT_LINE_KIND_POINTS_ISSUED", 1000, 1250),
        ("STATEMENT_LINE_KIND_TIER_BONUS", 252, -315),
    ]
    _return(ledger_stub, "e1-ret", "retailer", "wallet:PTS:m1", 100, 40, "e1")
    end = month.tick()
    second = settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p2", middle, end))).settlement
    assert _lines(second, "retailer") == [
        ("STATEMENT_LINE_KIND_EARN_REVERSALS", 100, -125),
        ("STATEMENT_LINE_KIND_TIER_BONUS", -40, 50),
    ]
    line = _bonus_line(second, "retailer")
    assert (line.tier_bonus_issued_quantity, line.tier_bonus_reversed_quantity) == (0, 40)
    assert second.netting.balanced and second.netting.operator_net_cents == -75
    (pts,) = [rf for rf in second.roll_forwards if rf.currency_code == "PTS"]
    assert (pts.opening_outstanding, pts.earn_reversed, pts.closing_outstanding) == (1000, 100, 900)
    assert {t.currency_code: t.amount for t in settlement.Audit(spb.AuditRequest()).wallet_totals}["PTS"] == 900


def test_tier_bonus_funder_is_part_of_an_agreements_content_and_an_unknown_one_is_refused_without_a_write(
    settlement,
):
    message = month.agreement("fuel-v1", "fuel", 1_000_000, [("PTS", "0.0100", "0.0080")])
    assert settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message)).created
    message.tier_bonus_funder = spb.TIER_BONUS_FUNDER_PARTNER  # the same content as unset
    assert not settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message)).created
    message.tier_bonus_funder = spb.TIER_BONUS_FUNDER_OPERATOR
    with pytest.raises(grpc.RpcError) as reused:
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info_of(reused.value).reason == "ID_REUSED_WITH_DIFFERENT_CONTENT"
    for unknown in (3, 99, -1):
        bad = month.agreement("fuel-v2", "fuel", 2_000_000, [("PTS", "0.0100", "0.0080")])
        bad.tier_bonus_funder = unknown
        with pytest.raises(grpc.RpcError) as refused:
            settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = error_info_of(refused.value)
        assert (info.reason, info.metadata["field"]) == ("INVALID_TIER_BONUS_FUNDER", "agreement.tier_bonus_funder")
    listed = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest(partner_id="fuel")).agreements
    assert [(a.agreement_id, a.tier_bonus_funder) for a in listed] == [("fuel-v1", spb.TIER_BONUS_FUNDER_PARTNER)]


class HidingEarnLedgerClient(LedgerClient):
    """Hides one earn from every read, as if it committed just after the close's reads."""

    def __init__(self, address: str, transport, hidden: lpb.Transfer) -> None:
        super().__init__(address, transport)
        self.hidden = hidden

    async def activity(self, start_us, end_us, account_ids, *original_time_bounds):
        lines, last_sequence = await super().activity(start_us, end_us, account_ids, *original_time_bounds)
        hidden, bonus = self.hidden, self.hidden.metadata.tier_bonus_points
        adjusted = []
        for line in lines:
            if line.code == "EARN" and line.account_id == hidden.debit_account_id:
                line = replace(
                    line, debits=line.debits - hidden.amount, tier_bonus_points=line.tier_bonus_points - bonus
                )
            elif line.code == "EARN" and line.account_id == hidden.credit_account_id:
                line = replace(
                    line, credits=line.credits - hidden.amount, tier_bonus_points=line.tier_bonus_points - bonus
                )
            adjusted.append(line)
        return adjusted, min(last_sequence, hidden.commit_sequence - 1)

    async def trial_balance(self):
        response = await super().trial_balance()
        response.commit_sequence = min(response.commit_sequence, self.hidden.commit_sequence - 1)
        return response


def test_an_earn_with_a_bonus_committed_after_the_close_is_a_prior_period_tier_bonus_line(
    settlement_database_url, ledger_server, ledger_stub
):
    month.setup_ledger(ledger_stub)
    database = Database(DatabaseOptions(url=settlement_database_url, pool_size=2))
    migrate(database, MIGRATIONS, VERSION_TABLE)

    async def scenario():
        real = LedgerClient(ledger_server.address, tls_transport())
        context = SettlementContext(database, real, ZoneInfo("Europe/Amsterdam"), 0, 0)
        start = month.tick()
        retailer = month.agreement("retailer-v1", "retailer", start - 1, [("PTS", "0.0125", "0.0080")])
        retailer.tier_bonus_funder = spb.TIER_BONUS_FUNDER_OPERATOR
        await agreements.set_price_agreement(context, wire.agreement_from_pb(retailer))
        _earn(ledger_stub, "e1", "retailer", "wallet:PTS:m1", 100, 0)
        late = _earn(ledger_stub, "e2", "retailer", "wallet:PTS:m1", 1000, 252)
        end = month.tick()
        hiding = SettlementContext(
            database, HidingEarnLedgerClient(ledger_server.address, tls_transport(), late), context.time_zone, 0, 0
        )
        first, _ = await periods.close_period(hiding, "p1", start, end)
        assert [(line.kind.value, line.quantity) for line in first.statement("retailer").lines] == [
            ("POINTS_ISSUED", 100)
        ]
        second, _ = await periods.close_period(context, "p2", end, month.tick())
        lines = second.statement("retailer").lines
        assert [
            (line.kind.value, line.quantity, line.amount_cents, line.prior_period_adjustment) for line in lines
        ] == [
            ("POINTS_ISSUED", 1000, 1250, True),
            ("TIER_BONUS", 252, -315, True),
        ]
        assert (lines[1].tier_bonus_issued_quantity, lines[1].tier_bonus_funder.value) == (252, "OPERATOR")
        assert second.netting.balanced
        (pts,) = [rf for rf in second.roll_forwards if rf.currency_code == "PTS"]
        assert (pts.opening_outstanding, pts.issued, pts.closing_outstanding) == (100, 1000, 1100)
        await real.close()

    try:
        asyncio.run(scenario())
    finally:
        database.dispose()
