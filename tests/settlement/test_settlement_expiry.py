"""Expiry and reinstatement in a settlement period, over gRPC against a real ledger whose clock the
test moves (services.ledger.store.clock_offset_us): the roll-forward shows both figures apart."""

from __future__ import annotations

import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.timeconv import timestamp_from_micros
from services.ledger import store as ledger_store
from tests.settlement import scripted_month as month

DAY_US = 86_400_000_000


@pytest.fixture
def clock(monkeypatch):
    """Moves the ledger's clock forward; restored after the test."""

    class Clock:
        def advance(self, microseconds: int) -> None:
            monkeypatch.setattr(ledger_store, "clock_offset_us", ledger_store.clock_offset_us + microseconds)

    monkeypatch.setattr(ledger_store, "clock_offset_us", 0)
    return Clock()


def _expiry_of(ledger, wallet_id: str) -> lpb.Transfer:
    entries = ledger.ListAccountEntries(lpb.ListAccountEntriesRequest(account_id=wallet_id), timeout=10).entries
    (expiry,) = [e.transfer for e in entries if e.transfer.code == lpb.TRANSFER_CODE_EXPIRY]
    return expiry


def test_points_expired_and_partly_reinstated_in_a_period_show_apart_and_close_at_the_wallets(
    settlement, ledger_stub, clock
):
    EARN, REDEEM, REVERSAL = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REDEEM, lpb.TRANSFER_CODE_REVERSAL
    month.setup_ledger(ledger_stub)
    policy = lpb.ExpiryPolicy(currency_code="PTS", kind=lpb.EXPIRY_POLICY_KIND_FIXED, months=1)
    ledger_stub.SetExpiryPolicy(lpb.SetExpiryPolicyRequest(policy=policy), timeout=10)
    start = month.tick()
    for message in month.base_agreements(start - 3_600_000_000):
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))
    month.transfer(ledger_stub, "e1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", EARN, partner="retailer")
    month.transfer(ledger_stub, "r1", "wallet:PTS:m1", "redemption:PTS:hotel", 300, "PTS", REDEEM, partner="hotel")
    # Past the lot's month and its notice period: the 700 left expire to breakage.
    clock.advance(3 * DAY_US)  # the expiry pass gives notice first
    ledger_stub.RunExpiry(lpb.RunExpiryRequest(), timeout=60)
    clock.advance(59 * DAY_US)
    ledger_stub.RunExpiry(lpb.RunExpiryRequest(), timeout=60)
    expiry = _expiry_of(ledger_stub, "wallet:PTS:m1")
    assert (expiry.debit_account_id, expiry.credit_account_id, expiry.amount) == ("wallet:PTS:m1", "breakage:PTS", 700)
    # Ten days later the operator reinstates 250 of them.
    clock.advance(10 * DAY_US)
    month.transfer(
        ledger_stub,
        "reinstate-1",
        "breakage:PTS",
        "wallet:PTS:m1",
        250,
        "PTS",
        REVERSAL,
        reverses_transfer_id=expiry.id,
    )
    month.transfer(ledger_stub, "e2", "issuance:PTS:fuel", "wallet:PTS:m2", 500, "PTS", EARN, partner="fuel")
    end = month.tick() + ledger_store.clock_offset_us
    clock.advance(1_000_000)  # the ledger's clock is past the period's end, so it can close
    period = spb.PeriodSelector(
        period_id="p1", start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
    )

    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period)).settlement
    closed = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period)).settlement
    stored = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period)).settlement  # read back from the store
    for result in (preview, closed, stored):
        (pts,) = [rf for rf in result.roll_forwards if rf.currency_code == "PTS"]
        assert (pts.opening_outstanding, pts.issued, pts.redeemed, pts.expired, pts.reinstated) == (
            0,
            1500,
            300,
            700,
            250,
        )
        assert pts.other_adjustments == 0
        assert pts.closing_outstanding == (
            pts.opening_outstanding
            + pts.issued
            - pts.earn_reversed
            - pts.redeemed
            + pts.redemption_reversed
            - pts.expired
            + pts.reinstated
            + pts.converted_in
            - pts.converted_out
            + pts.other_adjustments
        )
        assert pts.closing_outstanding == 1000 - 300 - 700 + 250 + 500
    assert stored == closed

    audit = settlement.Audit(spb.AuditRequest())
    assert list(audit.findings) == []
    assert {t.currency_code: t.amount for t in audit.wallet_totals}["PTS"] == 750
    (audited,) = [rf for rf in audit.roll_forwards if rf.currency_code == "PTS"]
    assert (audited.expired, audited.reinstated, audited.closing_outstanding) == (700, 250, 750)

    html = settlement.ExportReport(spb.ExportReportRequest(period=period, format=spb.REPORT_FORMAT_HTML)).content
    assert b'<th class="n">reinstated</th>' in html
