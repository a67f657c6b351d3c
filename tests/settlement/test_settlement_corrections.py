"""Corrections (issue 11), over gRPC against a real ledger on SQLite and PostgreSQL:
- a reversal is priced at its original's price, even in a later period under another agreement;
- an adjustment appears on the next statement closed, in its net and its EUR settlement transfer;
- reconciliation rows carry a review status with a history, and valid transitions only;
- the open-items report lists what is open per partner (RPC and coalition-finance open-items).

Figures: p1 (agreements v1: retailer issue EUR 0.0100, hotel reimbursement EUR 0.0080): retailer
earns 1,000 (10.00), hotel redeems 300 (-2.40). Then v2 from p1's end: retailer issue 0.0200,
hotel reimbursement 0.0160. p2: 200 of the earn returned (credited at v1's 0.0100: -2.00, not
-4.00), 100 of the redemption reversed (charged at v1's 0.0080: +0.80), a new earn of 300 at v2's
0.0200 (6.00).
"""

from __future__ import annotations

import csv
import io

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from tests.settlement import scripted_month as month
from tests.settlement.conftest import ADMIN_KEY

EARN, REDEEM, REVERSAL = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REDEEM, lpb.TRANSFER_CODE_REVERSAL
HOUR_US = 3_600_000_000


def _period(period_id: str, start: int, end: int) -> spb.PeriodSelector:
    return spb.PeriodSelector(
        period_id=period_id, start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
    )


def _lines(settlement: spb.PeriodSettlement, partner_id: str) -> list[tuple]:
    (statement,) = [s for s in settlement.statements if s.partner_id == partner_id]
    return [
        (
            spb.StatementLineKind.Name(line.kind).removeprefix("STATEMENT_LINE_KIND_"),
            line.quantity,
            line.unit_price,
            line.amount_cents,
            line.agreement_id,
            line.original_period_id,
        )
        for line in statement.lines
    ]


def _agree(settlement, agreement_id, partner, valid_from_us, issue, reimbursement) -> None:
    message = month.agreement(agreement_id, partner, valid_from_us, [("PTS", issue, reimbursement)])
    settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))


def _refused(call, request, code, reason):
    with pytest.raises(grpc.RpcError) as error:
        call(request)
    assert (error.value.code(), error_info_of(error.value).reason) == (code, reason)


def _first_period(settlement, ledger_stub):
    """p1 closed with the retailer's earn e1 and the hotel's redemption r1; v2 prices start at its end."""
    month.setup_ledger(ledger_stub)
    start = month.tick()
    _agree(settlement, "retailer-v1", "retailer", start - HOUR_US, "0.0100", "0.0080")
    _agree(settlement, "hotel-v1", "hotel", start - HOUR_US, "0.0100", "0.0080")
    month.transfer(ledger_stub, "e1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", EARN, partner="retailer")
    month.transfer(ledger_stub, "r1", "wallet:PTS:m1", "redemption:PTS:hotel", 300, "PTS", REDEEM, partner="hotel")
    middle = month.tick()
    first = settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p1", start, middle))).settlement
    assert {s.partner_id: s.net_cents for s in first.statements} == {"retailer": 1000, "hotel": -240}
    _agree(settlement, "retailer-v2", "retailer", middle, "0.0200", "0.0160")
    _agree(settlement, "hotel-v2", "hotel", middle, "0.0200", "0.0160")
    return middle


def test_a_reversal_in_a_later_period_under_a_new_price_is_priced_at_its_originals_price_and_says_so(
    settlement, ledger_stub
):
    middle = _first_period(settlement, ledger_stub)
    month.transfer(
        ledger_stub, "e1-ret", "wallet:PTS:m1", "issuance:PTS:retailer", 200, "PTS", REVERSAL,
        partner="retailer", reverses_transfer_id="e1",
    )  # fmt: skip
    month.transfer(
        ledger_stub, "r1-ret", "redemption:PTS:hotel", "wallet:PTS:m1", 100, "PTS", REVERSAL,
        partner="hotel", reverses_transfer_id="r1",
    )  # fmt: skip
    month.transfer(ledger_stub, "e2", "issuance:PTS:retailer", "wallet:PTS:m1", 300, "PTS", EARN, partner="retailer")
    end = month.tick()
    period = _period("p2", middle, end)
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period)).settlement
    second = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period)).settlement
    for result in (preview, second):
        assert _lines(result, "retailer") == [
            ("POINTS_ISSUED", 300, "0.0200", 600, "retailer-v2", ""),
            ("EARN_REVERSALS", 200, "0.0100", -200, "retailer-v1", "p1"),
        ]
        assert _lines(result, "hotel") == [("REDEMPTION_REVERSALS", 100, "0.0080", 80, "hotel-v1", "p1")]
        assert result.netting.balanced and result.netting.operator_net_cents == 480
    # Nobody gains from the price change: over p1 and p2 the retailer paid 10.00 - 2.00 = 8.00 for the
    # 800 points of e1 it kept, which is 800 x v1's 0.0100.
    html = settlement.ExportReport(spb.ExportReportRequest(period=period, format=spb.REPORT_FORMAT_HTML)).content
    assert "Earn reversals (priced at agreement retailer-v1, period p1)" in html.decode()
    assert "Redemption reversals (priced at agreement hotel-v1, period p1)" in html.decode()


def _reconciled(settlement, ledger_stub):
    """p1 closed, and a reconciliation of the retailer's p1: row 1 matched, row 2 missing in the ledger."""
    middle = _first_period(settlement, ledger_stub)
    file_csv = (
        "receipt_id,store_id,terminal_id,time,type,points,currency\r\n"
        f"e1,s1,t1,{month.iso(middle - 1)},EARN,1000,PTS\r\n"
        f"x9,s1,t1,{month.iso(middle - 1)},EARN,50,PTS\r\n"
    ).encode()
    periods = settlement.ListPeriods(spb.ListPeriodsRequest()).periods
    (p1,) = periods
    request = spb.ReconcileRequest(
        reconciliation_id="rec-1",
        partner_id="retailer",
        period=spb.PeriodSelector(period_id="p1", start_time=p1.start_time, end_time=p1.end_time),
        file_csv=file_csv,
    )
    rows = settlement.Reconcile(request).reconciliation.rows
    return middle, rows


def test_an_adjustment_appears_on_the_next_statement_closed_in_its_net_and_settlement_transfer_once(
    settlement, ledger_stub
):
    middle, rows = _reconciled(settlement, ledger_stub)
    assert [(r.row_number, spb.MatchStatus.Name(r.status), r.review_status) for r in rows] == [
        (1, "MATCH_STATUS_MATCHED", spb.REVIEW_STATUS_ACCEPTED),
        (2, "MATCH_STATUS_MISSING_IN_LEDGER", spb.REVIEW_STATUS_OPEN),
    ]
    adjustment = spb.Adjustment(
        adjustment_id="adj-1",
        partner_id="retailer",
        direction=spb.ADJUSTMENT_DIRECTION_OPERATOR_PAYS,
        amount_cents=1250,
        reason="receipt x9 earned offline, never reached the ledger",
        link=spb.AdjustmentLink(reconciliation_id="rec-1", reconciliation_row_number=2),
    )
    posted = settlement.PostAdjustment(spb.PostAdjustmentRequest(adjustment=adjustment))
    assert posted.created and posted.adjustment.settled_period_id == ""
    assert not settlement.PostAdjustment(spb.PostAdjustmentRequest(adjustment=adjustment)).created
    other = spb.Adjustment()
    other.CopyFrom(adjustment)
    other.amount_cents = 1251
    _refused(
        settlement.PostAdjustment,
        spb.PostAdjustmentRequest(adjustment=other),
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_REUSED_WITH_DIFFERENT_CONTENT",
    )
    # The hotel pays EUR 3.00 back for p1's line 1 (its only line): a link to a closed statement line.
    to_line = spb.Adjustment(
        adjustment_id="adj-2",
        partner_id="hotel",
        direction=spb.ADJUSTMENT_DIRECTION_PARTNER_PAYS,
        amount_cents=300,
        reason="reimbursed twice",
        link=spb.AdjustmentLink(statement_period_id="p1", statement_line_number=1),
    )
    assert settlement.PostAdjustment(spb.PostAdjustmentRequest(adjustment=to_line)).created
    missing_line = spb.Adjustment()
    missing_line.CopyFrom(to_line)
    missing_line.adjustment_id, missing_line.link.statement_line_number = "adj-3", 2
    _refused(
        settlement.PostAdjustment,
        spb.PostAdjustmentRequest(adjustment=missing_line),
        grpc.StatusCode.NOT_FOUND,
        "STATEMENT_LINE_NOT_FOUND",
    )
    stored_p1 = settlement.GetPeriod(spb.GetPeriodRequest(period_id="p1")).settlement
    assert {s.partner_id: s.net_cents for s in stored_p1.statements} == {"retailer": 1000, "hotel": -240}

    end = month.tick()
    second = settlement.ClosePeriod(spb.ClosePeriodRequest(period=_period("p2", middle, end))).settlement
    assert _lines(second, "retailer") == [("ADJUSTMENT", 1250, "0.01", -1250, "", "")]
    assert _lines(second, "hotel") == [("ADJUSTMENT", 300, "0.01", 300, "", "")]
    (line,) = next(s for s in second.statements if s.partner_id == "retailer").lines
    assert (line.adjustment_id, line.adjustment_reason) == ("adj-1", adjustment.reason)
    assert second.netting.balanced and second.netting.operator_net_cents == -950
    transfers = ledger_stub.GetTransfers(
        lpb.GetTransfersRequest(ids=["settlement:p2:retailer", "settlement:p2:hotel"]), timeout=10
    ).transfers
    assert {(t.debit_account_id, t.credit_account_id, t.amount) for t in transfers} == {
        ("operator_settlement:EUR", "settlement:EUR:retailer", 1250),
        ("settlement:EUR:hotel", "operator_settlement:EUR", 300),
    }
    # Carried once: p1 never changed, and the period after p2 does not carry them again.
    assert settlement.GetPeriod(spb.GetPeriodRequest(period_id="p1")).settlement == stored_p1
    later = month.tick()
    third = settlement.PreviewStatement(spb.PreviewStatementRequest(period=_period("p3", end, later))).settlement
    assert list(third.statements) == []
    repeat = settlement.PostAdjustment(spb.PostAdjustmentRequest(adjustment=adjustment)).adjustment
    assert repeat.settled_period_id == "p2"


def test_adjustments_are_refused_without_a_write_when_their_input_is_wrong(settlement, ledger_stub):
    _reconciled(settlement, ledger_stub)
    good = spb.Adjustment(
        adjustment_id="adj-x",
        partner_id="retailer",
        direction=spb.ADJUSTMENT_DIRECTION_PARTNER_PAYS,
        amount_cents=100,
        reason="r",
        link=spb.AdjustmentLink(reconciliation_id="rec-1", reconciliation_row_number=1),
    )
    cases = [
        ({"amount_cents": 0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AMOUNT"),
        ({"direction": 0}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DIRECTION"),
        ({"reason": "  "}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TEXT"),
        ({"adjustment_id": "a b"}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADJUSTMENT_ID"),
        ({"partner_id": "hotel"}, grpc.StatusCode.NOT_FOUND, "RECONCILIATION_ROW_NOT_FOUND"),
    ]
    for change, code, reason in cases:
        bad = spb.Adjustment()
        bad.CopyFrom(good)
        for name, value in change.items():
            setattr(bad, name, value)
        _refused(settlement.PostAdjustment, spb.PostAdjustmentRequest(adjustment=bad), code, reason)
    both = spb.Adjustment()
    both.CopyFrom(good)
    both.link.statement_period_id, both.link.statement_line_number = "p1", 1
    _refused(
        settlement.PostAdjustment,
        spb.PostAdjustmentRequest(adjustment=both),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_LINK",
    )
    assert list(settlement.ListOpenItems(spb.ListOpenItemsRequest(partner_id="retailer")).items)[-1].HasField(
        "reconciliation_row"
    )  # no adjustment was stored


def test_reconciliation_rows_move_through_valid_review_statuses_only_and_keep_their_history(settlement, ledger_stub):
    _reconciled(settlement, ledger_stub)

    def review(change_id, row_number, status, note="n"):
        request = spb.SetReconciliationRowStatusRequest(
            change_id=change_id, reconciliation_id="rec-1", row_number=row_number, status=status, note=note
        )
        return request

    disputed = settlement.SetReconciliationRowStatus(review("c1", 2, spb.REVIEW_STATUS_DISPUTED, "checking"))
    assert (disputed.status, disputed.changed) == (spb.REVIEW_STATUS_DISPUTED, True)
    again = settlement.SetReconciliationRowStatus(review("c1", 2, spb.REVIEW_STATUS_DISPUTED, "checking"))
    assert (again.status, again.changed, len(again.history)) == (spb.REVIEW_STATUS_DISPUTED, False, 1)
    _refused(
        settlement.SetReconciliationRowStatus,
        review("c1", 2, spb.REVIEW_STATUS_RESOLVED),
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_REUSED_WITH_DIFFERENT_CONTENT",
    )
    resolved = settlement.SetReconciliationRowStatus(review("c2", 2, spb.REVIEW_STATUS_RESOLVED, "adjusted"))
    assert [(c.from_status, c.to_status, c.note) for c in resolved.history] == [
        (spb.REVIEW_STATUS_OPEN, spb.REVIEW_STATUS_DISPUTED, "checking"),
        (spb.REVIEW_STATUS_DISPUTED, spb.REVIEW_STATUS_RESOLVED, "adjusted"),
    ]
    for change_id, row_number, status, code, reason in (
        ("c3", 2, spb.REVIEW_STATUS_OPEN, grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATUS_TRANSITION"),
        ("c4", 1, spb.REVIEW_STATUS_ACCEPTED, grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATUS_TRANSITION"),
        ("c5", 9, spb.REVIEW_STATUS_ACCEPTED, grpc.StatusCode.NOT_FOUND, "RECONCILIATION_ROW_NOT_FOUND"),
        ("c6", 1, 0, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REVIEW_STATUS"),
    ):
        _refused(settlement.SetReconciliationRowStatus, review(change_id, row_number, status), code, reason)
    stored = settlement.GetReconciliation(spb.GetReconciliationRequest(reconciliation_id="rec-1")).reconciliation
    assert [(r.review_status, r.review_note) for r in stored.rows][:2] == [
        (spb.REVIEW_STATUS_ACCEPTED, ""),
        (spb.REVIEW_STATUS_RESOLVED, "adjusted"),
    ]


def test_open_items_list_open_rows_and_pending_adjustments_per_partner_paged_and_in_the_cli(
    settlement, settlement_server, ledger_stub, monkeypatch, capsys
):
    from services.settlement import cli

    _reconciled(settlement, ledger_stub)
    adjustment = spb.Adjustment(
        adjustment_id="adj-1",
        partner_id="hotel",
        direction=spb.ADJUSTMENT_DIRECTION_OPERATOR_PAYS,
        amount_cents=125,
        reason="=goodwill",
        link=spb.AdjustmentLink(statement_period_id="p1", statement_line_number=1),
    )
    settlement.PostAdjustment(spb.PostAdjustmentRequest(adjustment=adjustment))
    first = settlement.ListOpenItems(spb.ListOpenItemsRequest(page_size=1))
    second = settlement.ListOpenItems(spb.ListOpenItemsRequest(page_size=1, page_token=first.next_page_token))
    assert second.next_page_token == ""
    (hotel_item,) = first.items
    (retailer_item,) = second.items
    assert (hotel_item.partner_id, hotel_item.adjustment.adjustment_id) == ("hotel", "adj-1")
    assert (retailer_item.partner_id, retailer_item.reconciliation_id, retailer_item.period_id) == (
        "retailer",
        "rec-1",
        "p1",
    )
    assert (retailer_item.reconciliation_row.row_number, retailer_item.reconciliation_row.receipt_id) == (2, "x9")

    monkeypatch.setenv("COALITION_SETTLEMENT_ADDRESS", settlement_server.address)
    monkeypatch.setenv("COALITION_ADMIN_API_KEY", ADMIN_KEY)
    assert cli.main(["open-items"]) == 1
    text = capsys.readouterr().out
    assert "hotel: 0 reconciliation row(s) open or disputed, 1 adjustment(s) for the next statement" in text
    assert "retailer: 1 reconciliation row(s) open or disputed, 0 adjustment(s)" in text
    assert cli.main(["open-items", "--partner", "hotel", "--csv"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["item"], r["reference"], r["amount_cents"], r["direction"], r["note"]) for r in rows] == [
        ("ADJUSTMENT", "adj-1", "125", "OPERATOR_PAYS", "'=goodwill")
    ]
