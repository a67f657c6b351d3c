"""Reconciliation sees currency, store, terminal and period, through the real servers.

A receipt paid 200 PTS + 500 HOTELPTS at the hotel must not match a partner file that says 700
PTS; a file without the currency column is refused while the hotel's ledger rows are in two
currencies; a row at another store or terminal, or outside the period, is classified as such.
"""

from __future__ import annotations

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from tests.settlement import scripted_month as month

HEADER = "receipt_id,store_id,terminal_id,time,type,points,currency\n"
REDEEM = lpb.TRANSFER_CODE_REDEEM


def _pay_in_two_currencies(ledger_stub) -> tuple[int, int]:
    """Receipt R9 at the hotel: 200 PTS from m1 and 500 HOTELPTS from m3, store s1, terminal t1."""
    month.setup_ledger(ledger_stub)
    response = ledger_stub.CreateAccounts(
        lpb.CreateAccountsRequest(
            accounts=[
                lpb.Account(
                    id="redemption:HOTELPTS:hotel",
                    currency_code="HOTELPTS",
                    normal_side=lpb.ACCOUNT_SIDE_CREDIT,
                    owner_id="hotel",
                    kind="partner_redemption",
                )
            ]
        ),
        timeout=10,
    )
    assert all(r.status != lpb.ITEM_STATUS_FAILED for r in response.results), response
    month.transfer(
        ledger_stub, "fund-m1", "issuance:PTS:retailer", "wallet:PTS:m1", 1_000, "PTS", lpb.TRANSFER_CODE_EARN
    )
    month.transfer(
        ledger_stub,
        "fund-m3",
        "issuance:HOTELPTS:hotel",
        "wallet:HOTELPTS:m3",
        1_000,
        "HOTELPTS",
        lpb.TRANSFER_CODE_EARN,
    )
    start = month.tick()
    month.transfer(ledger_stub, "r9-pts", "wallet:PTS:m1", "redemption:PTS:hotel", 200, "PTS", REDEEM, receipt="R9")
    month.transfer(
        ledger_stub,
        "r9-hotel",
        "wallet:HOTELPTS:m3",
        "redemption:HOTELPTS:hotel",
        500,
        "HOTELPTS",
        REDEEM,
        receipt="R9",
    )
    end = month.tick()
    return start, end


def _reconcile(settlement, reconciliation_id: str, start: int, end: int, file_text: str):
    return settlement.Reconcile(
        spb.ReconcileRequest(
            reconciliation_id=reconciliation_id,
            partner_id="hotel",
            period=spb.PeriodSelector(
                period_id="p", start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
            ),
            file_csv=file_text.encode(),
        )
    ).reconciliation


def _rows(reconciliation):
    return [
        (
            spb.MatchStatus.Name(r.status).removeprefix("MATCH_STATUS_"),
            r.currency_code,
            r.partner_points,
            r.ledger_points,
        )
        for r in reconciliation.rows
    ]


def test_a_receipt_paid_in_two_currencies_does_not_match_a_file_saying_700_pts(settlement, ledger_stub):
    start, end = _pay_in_two_currencies(ledger_stub)
    inside = month.iso(start + 1)
    made = _reconcile(settlement, "rec-700", start, end, HEADER + f"R9,s1,t1,{inside},REDEEM,700,PTS\n")
    assert _rows(made) == [("AMOUNT_DIFFERS", "PTS", 700, 200), ("MISSING_AT_PARTNER", "HOTELPTS", 0, 500)]
    assert made.counts.matched == 0
    right = _reconcile(
        settlement,
        "rec-both",
        start,
        end,
        HEADER + f"R9,s1,t1,{inside},REDEEM,200,PTS\nR9,s1,t1,{inside},REDEEM,500,HOTELPTS\n",
    )
    assert _rows(right) == [("MATCHED", "PTS", 200, 200), ("MATCHED", "HOTELPTS", 500, 500)]
    stored = settlement.GetReconciliation(spb.GetReconciliationRequest(reconciliation_id="rec-700"))
    assert stored.reconciliation == made


def test_a_file_without_currency_is_refused_when_the_ledger_shows_two(settlement, ledger_stub):
    start, end = _pay_in_two_currencies(ledger_stub)
    legacy = "receipt_id,store_id,terminal_id,time,type,points\n" + f"R9,s1,t1,{month.iso(start + 1)},REDEEM,700\n"
    with pytest.raises(grpc.RpcError) as caught:
        _reconcile(settlement, "rec-legacy", start, end, legacy)
    info = error_info_of(caught.value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "CURRENCY_COLUMN_REQUIRED" and info.metadata["currencies"] == "HOTELPTS,PTS"


def test_store_terminal_and_time_outside_the_period_are_their_own_statuses(settlement, ledger_stub):
    start, end = _pay_in_two_currencies(ledger_stub)
    inside, before = month.iso(start + 1), month.iso(start - 1)
    made = _reconcile(
        settlement,
        "rec-places",
        start,
        end,
        HEADER
        + f"R9,s2,t1,{inside},REDEEM,200,PTS\n"  # another store
        + f"R9,s1,t7,{inside},REDEEM,500,HOTELPTS\n"  # another terminal
        + f"R9,s1,t1,{before},REDEEM,1,PTS\n",  # before the period starts: not summed
    )
    assert _rows(made) == [
        ("STORE_DIFFERS", "PTS", 200, 200),
        ("TERMINAL_DIFFERS", "HOTELPTS", 500, 500),
        ("OUTSIDE_PERIOD", "PTS", 1, 200),
    ]
    counts = made.counts
    assert (counts.store_differs, counts.terminal_differs, counts.outside_period, counts.matched) == (1, 1, 1, 0)
