"""A scripted settlement period on a real ledger, written through the ledger's gRPC API.

Figures (issue 0.0100, reimbursement 0.0080 per PTS point; fuel's issue price becomes 0.0120
in the middle of the period; the airline is paid 0.0090 per mile delivered from hotel points):
  retailer: issued 1,000 (10.00) - reversed 20 (-0.20)                          net  9.80
  fuel:     issued 500 (5.00) + 1,000 after the price change (12.00), redeemed 200 (-1.60) net 15.40
  hotel:    redeemed 300 PTS (-2.40), 30 of them reversed (0.24), issued 60,000 HOTELPTS at 0 (0.00),
            its members converted 60,000 HOTELPTS into 25,000 miles (225.00)  net 222.84
  airline:  25,000 miles delivered (-225.00)                                    net -225.00
  operator net = 9.80 + 15.40 + 222.84 - 225.00 = 23.04
PTS liability: 2,500 issued - 20 reversed - 500 redeemed + 30 reversed - 10 expired = 2,000.
A hold of 50 points at fuel made inside the period is captured after it ends (next period).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.timeconv import timestamp_from_micros

EXPECTED_NETS = {"retailer": 980, "fuel": 1540, "hotel": 22284, "airline": -22500}
EXPECTED_OPERATOR_NET = 2304
EXPECTED_PTS_CLOSING = 2000

CREDIT, DEBIT = lpb.ACCOUNT_SIDE_CREDIT, lpb.ACCOUNT_SIDE_DEBIT


def now_us() -> int:
    return time.time_ns() // 1000


def iso(micros: int) -> str:
    """A moment as ISO 8601 with offset, as a partner's reconciliation file writes it."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).isoformat()


def tick() -> int:
    """A moment strictly after everything committed so far (the ledger's clock is this machine's)."""
    time.sleep(0.02)
    moment = now_us()
    time.sleep(0.02)
    return moment


def setup_ledger(ledger) -> None:
    for code, scale, owner in (
        ("PTS", 0, "operator"),
        ("HOTELPTS", 0, "hotel"),
        ("AIRMILES", 0, "airline"),
        ("EUR", 2, "operator"),
    ):
        ledger.RegisterCurrency(
            lpb.RegisterCurrencyRequest(currency=lpb.Currency(code=code, scale=scale, owner_id=owner)),
            timeout=10,
        )
    accounts = [
        ("issuance:PTS:retailer", "PTS", DEBIT, "retailer", "partner_issuance", False),
        ("issuance:PTS:fuel", "PTS", DEBIT, "fuel", "partner_issuance", False),
        ("redemption:PTS:fuel", "PTS", CREDIT, "fuel", "partner_redemption", False),
        ("redemption:PTS:hotel", "PTS", CREDIT, "hotel", "partner_redemption", False),
        ("issuance:HOTELPTS:hotel", "HOTELPTS", DEBIT, "hotel", "partner_issuance", False),
        ("breakage:PTS", "PTS", CREDIT, "operator", "operator_breakage", False),
        ("exchange:HOTELPTS:AIRMILES", "HOTELPTS", DEBIT, "operator", "operator_exchange", False),
        ("exchange:AIRMILES:HOTELPTS", "AIRMILES", DEBIT, "operator", "operator_exchange", False),
        ("wallet:PTS:m1", "PTS", CREDIT, "m1", "member_wallet", True),
        ("wallet:PTS:m2", "PTS", CREDIT, "m2", "member_wallet", True),
        ("wallet:HOTELPTS:m3", "HOTELPTS", CREDIT, "m3", "member_wallet", True),
        ("wallet:AIRMILES:m3", "AIRMILES", CREDIT, "m3", "member_wallet", True),
    ]
    response = ledger.CreateAccounts(
        lpb.CreateAccountsRequest(
            accounts=[
                lpb.Account(id=i, currency_code=c, normal_side=s, owner_id=o, kind=k, no_overdraft=n)
                for i, c, s, o, k, n in accounts
            ]
        ),
        timeout=10,
    )
    assert all(r.status != lpb.ITEM_STATUS_FAILED for r in response.results), response


def transfer(
    ledger,
    id,
    debit,
    credit,
    amount,
    currency,
    code,
    kind=lpb.TRANSFER_KIND_POSTED,
    partner="",
    receipt="",
    tier_bonus_points=0,
    **extra,
) -> lpb.Transfer:
    (result,) = ledger.CreateTransfers(
        lpb.CreateTransfersRequest(
            transfers=[
                lpb.TransferInput(
                    id=id,
                    debit_account_id=debit,
                    credit_account_id=credit,
                    amount=amount,
                    currency_code=currency,
                    kind=kind,
                    code=code,
                    metadata=lpb.TransferMetadata(
                        partner_id=partner,
                        store_id="s1",
                        terminal_id="t1",
                        receipt_id=receipt or id,
                        tier_bonus_points=tier_bonus_points,
                    ),
                    **extra,
                )
            ]
        ),
        timeout=10,
    ).results
    assert result.status == lpb.ITEM_STATUS_CREATED, result
    return result.transfer


def agreement(agreement_id, partner, valid_from_us, prices=(), conversions=()) -> spb.PriceAgreement:
    return spb.PriceAgreement(
        agreement_id=agreement_id,
        partner_id=partner,
        valid_from_time=timestamp_from_micros(valid_from_us),
        point_prices=[
            spb.PointPrice(currency_code=c, issue_price_per_point=i, reimbursement_price_per_point=r)
            for c, i, r in prices
        ],
        conversion_prices=[
            spb.ConversionPrice(from_currency_code=f, to_currency_code=t, price_per_unit_received=p)
            for f, t, p in conversions
        ],
    )


def base_agreements(valid_from_us: int) -> list[spb.PriceAgreement]:
    pts = ("PTS", "0.0100", "0.0080")
    return [
        agreement("retailer-v1", "retailer", valid_from_us, [pts]),
        agreement("fuel-v1", "fuel", valid_from_us, [pts]),
        agreement("hotel-v1", "hotel", valid_from_us, [pts, ("HOTELPTS", "0", "0")]),
        agreement(
            "airline-v1",
            "airline",
            valid_from_us,
            [("AIRMILES", "0", "0")],
            [("HOTELPTS", "AIRMILES", "0.009000")],
        ),
    ]


def script_period(ledger, set_agreement) -> tuple[int, int, str]:
    """Writes the period; returns (start_us, end_us, id of the hold captured after the end)."""
    start = tick()
    for message in base_agreements(start - 3_600_000_000):
        set_agreement(message)
    EARN, REVERSAL, REDEEM = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REVERSAL, lpb.TRANSFER_CODE_REDEEM
    transfer(ledger, "e1", "issuance:PTS:retailer", "wallet:PTS:m1", 1000, "PTS", EARN, partner="retailer")
    transfer(
        ledger,
        "e1-rev",
        "wallet:PTS:m1",
        "issuance:PTS:retailer",
        20,
        "PTS",
        REVERSAL,
        partner="retailer",
        reverses_transfer_id="e1",
    )
    transfer(ledger, "e2", "issuance:PTS:fuel", "wallet:PTS:m2", 500, "PTS", EARN, partner="fuel")
    transfer(
        ledger,
        "h1",
        "wallet:PTS:m2",
        "redemption:PTS:fuel",
        200,
        "PTS",
        REDEEM,
        lpb.TRANSFER_KIND_PENDING,
        partner="fuel",
        timeout_seconds=600,
    )
    transfer(
        ledger,
        "h1-post",
        "",
        "",
        200,
        "",
        REDEEM,
        lpb.TRANSFER_KIND_POST_PENDING,
        partner="fuel",
        receipt="h1",
        pending_id="h1",
    )
    transfer(ledger, "r1", "wallet:PTS:m1", "redemption:PTS:hotel", 300, "PTS", REDEEM, partner="hotel")
    transfer(
        ledger,
        "r1-rev",
        "redemption:PTS:hotel",
        "wallet:PTS:m1",
        30,
        "PTS",
        REVERSAL,
        partner="hotel",
        reverses_transfer_id="r1",
    )
    transfer(
        ledger,
        "e3",
        "issuance:HOTELPTS:hotel",
        "wallet:HOTELPTS:m3",
        60_000,
        "HOTELPTS",
        EARN,
        partner="hotel",
    )
    conversion = lpb.CreateTransfersRequest(
        transfers=[
            lpb.TransferInput(
                id="c1-out",
                debit_account_id="wallet:HOTELPTS:m3",
                credit_account_id="exchange:HOTELPTS:AIRMILES",
                amount=60_000,
                currency_code="HOTELPTS",
                kind=lpb.TRANSFER_KIND_POSTED,
                code=lpb.TRANSFER_CODE_CONVERSION,
                linked=True,
            ),
            lpb.TransferInput(
                id="c1-in",
                debit_account_id="exchange:AIRMILES:HOTELPTS",
                credit_account_id="wallet:AIRMILES:m3",
                amount=25_000,
                currency_code="AIRMILES",
                kind=lpb.TRANSFER_KIND_POSTED,
                code=lpb.TRANSFER_CODE_CONVERSION,
            ),
        ]
    )
    results = ledger.CreateTransfers(conversion, timeout=10).results
    assert all(r.status == lpb.ITEM_STATUS_CREATED for r in results), results
    price_change = tick()
    set_agreement(agreement("fuel-v2", "fuel", price_change, [("PTS", "0.0120", "0.0080")]))
    transfer(ledger, "e4", "issuance:PTS:fuel", "wallet:PTS:m2", 1000, "PTS", EARN, partner="fuel")
    transfer(ledger, "x1", "wallet:PTS:m2", "breakage:PTS", 10, "PTS", lpb.TRANSFER_CODE_EXPIRY)
    transfer(
        ledger,
        "h2",
        "wallet:PTS:m1",
        "redemption:PTS:fuel",
        50,
        "PTS",
        REDEEM,
        lpb.TRANSFER_KIND_PENDING,
        partner="fuel",
        timeout_seconds=600,
    )
    end = tick()
    return start, end, "h2"
