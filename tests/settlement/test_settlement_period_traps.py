"""Periods without traps, through the real servers and the finance CLI: activity before the first
period is named, a partner without a price does not block the others' preview, a preview over a
closed period shows only what is not yet settled, a refused close names the window to close
instead, and a mistaken close is corrected by compensating activity in the next period."""

from __future__ import annotations

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.settlement import cli
from tests.settlement import scripted_month as month
from tests.settlement.test_settlement_service import _iso, nets, selector

EARN, REVERSAL, REDEEM = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REVERSAL, lpb.TRANSFER_CODE_REDEEM


def _kinds(warnings):
    return sorted((spb.PeriodWarningKind.Name(w.kind), w.partner_id, w.currency_code) for w in warnings)


def test_periods_warn_instead_of_trapping_and_a_mistaken_close_is_corrected_next_period(
    settlement, settlement_server, ledger_stub, monkeypatch, capsys, tmp_path
):
    monkeypatch.setenv("COALITION_SETTLEMENT_ADDRESS", settlement_server.address)
    monkeypatch.setenv("COALITION_ADMIN_API_KEY", "test-admin-key-settlement")
    month.setup_ledger(ledger_stub)
    agreements = {a.partner_id: a for a in month.base_agreements(month.now_us() - 3_600_000_000)}
    for partner in ("retailer", "fuel"):
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=agreements[partner]))
    month.transfer(ledger_stub, "e0", "issuance:PTS:retailer", "wallet:PTS:m1", 70, "PTS", EARN, partner="retailer")
    t0 = month.tick()
    month.transfer(ledger_stub, "e1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", EARN, partner="retailer")
    month.transfer(ledger_stub, "wrong", "issuance:PTS:fuel", "wallet:PTS:m2", 500, "PTS", EARN, partner="fuel")
    month.transfer(ledger_stub, "r1", "wallet:PTS:m1", "redemption:PTS:hotel", 300, "PTS", REDEEM, partner="hotel")
    t1 = month.tick()
    month.transfer(ledger_stub, "e2", "issuance:PTS:retailer", "wallet:PTS:m1", 200, "PTS", EARN, partner="retailer")

    # The hotel has no price: its activity is left out and named; the others preview in full.
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=selector("early", t0, t1)))
    assert nets(preview.settlement) == {"retailer": 1000, "fuel": 500}
    assert _kinds(preview.warnings) == [
        ("PERIOD_WARNING_KIND_PRICE_MISSING", "hotel", "PTS"),
        ("PERIOD_WARNING_KIND_UNBILLED_BEFORE_FIRST_PERIOD", "retailer", "PTS"),  # e0's 70 points
    ]
    window = ["early", "--start", _iso(t0), "--end", _iso(t1)]
    assert cli.main(["close", *window, "--yes"]) == 2  # a close still needs every price
    assert "PRICE_MISSING" in capsys.readouterr().err
    settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=agreements["hotel"]))
    assert cli.main(["close", *window]) == 1  # a dry run stores and posts nothing
    dry = capsys.readouterr().out
    assert "dry run: early is NOT closed" in dry and "WARNING UNBILLED_BEFORE_FIRST_PERIOD" in dry
    assert not settlement.ListPeriods(spb.ListPeriodsRequest()).periods
    # The mistaken close: "early" stops half-way through the window meant, and bills fuel's wrong earn.
    assert cli.main(["close", *window, "--yes"]) == 0
    capsys.readouterr()
    # A closed custom period is found again by its id alone (its times are stored).
    assert cli.main(["export", "early", "--format", "journal-csv", "--output", str(tmp_path / "early.csv")]) == 0
    assert "early" in (tmp_path / "early.csv").read_text()

    # The correction: the wrong earn is reversed on the ledger; the next period credits it back.
    month.transfer(
        ledger_stub, "wrong-rev", "wallet:PTS:m2", "issuance:PTS:fuel", 500, "PTS", REVERSAL, partner="fuel",
        reverses_transfer_id="wrong",
    )  # fmt: skip
    t2 = month.tick()
    # The whole window previews only what the closed period did not settle, and says so.
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=selector("whole", t0, t2)))
    assert (preview.settlement.start_time, preview.settlement.end_time) == (selector("", t1, t2).start_time,
                                                                          selector("", t1, t2).end_time)  # fmt: skip
    assert nets(preview.settlement) == {"retailer": 200, "fuel": -500}
    overlap = [w for w in preview.warnings if w.kind == spb.PERIOD_WARNING_KIND_OVERLAPS_CLOSED_PERIOD]
    assert [w.period_id for w in overlap] == ["early"] and "whole-rest" in overlap[0].message
    html = settlement.ExportReport(
        spb.ExportReportRequest(period=selector("whole", t0, t2), format=spb.REPORT_FORMAT_HTML)
    ).content.decode()
    assert "OVERLAPS_CLOSED_PERIOD" in html and "UNBILLED_BEFORE_FIRST_PERIOD" in html

    # Closing the whole window is refused with the window to close instead, and the CLI prints it.
    with pytest.raises(grpc.RpcError) as caught:
        settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("whole", t0, t2)))
    info = error_info_of(caught.value)
    assert info.reason == "PERIOD_NOT_CONTIGUOUS"
    assert info.metadata["suggested_period_id"] == "whole-rest"
    assert cli.main(["close", "whole", "--start", _iso(t0), "--end", _iso(t2), "--yes"]) == 2
    hint = capsys.readouterr().err.splitlines()[-1].strip()
    assert hint.startswith("coalition-finance close whole-rest --start ")
    assert cli.main([*hint.split()[1:], "--yes"]) == 0  # the suggested command, as printed
    rest = settlement.GetPeriod(spb.GetPeriodRequest(period_id="whole-rest")).settlement
    assert nets(rest) == {"retailer": 200, "fuel": -500}
    early = settlement.GetPeriod(spb.GetPeriodRequest(period_id="early")).settlement
    assert nets(early)["fuel"] + nets(rest)["fuel"] == 0  # the wrong earn, billed and credited back
