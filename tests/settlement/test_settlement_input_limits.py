"""Bad input over real gRPC (settlement + ledger on loopback, SQLite and PostgreSQL): never INTERNAL."""

from __future__ import annotations

import base64

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from tests.settlement import scripted_month as month


def refused(call) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), error_info_of(caught.value).reason, caught.value.details()


def test_a_price_above_the_ceiling_is_invalid_argument(settlement):
    def agreement(price):
        return spb.SetPriceAgreementRequest(
            agreement=spb.PriceAgreement(
                agreement_id=f"fuel-{price}",
                partner_id="fuel",
                valid_from_time=timestamp_from_micros(1_000_000),
                point_prices=[
                    spb.PointPrice(currency_code="PTS", issue_price_per_point=price, reimbursement_price_per_point="0")
                ],
            )
        )

    code, reason, details = refused(lambda: settlement.SetPriceAgreement(agreement("1000000000000")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PRICE") and "at most EUR 1000" in details
    assert settlement.SetPriceAgreement(agreement("1000")).created


HEADER = "receipt_id,store_id,terminal_id,time,type,points\n"


def reconcile(settlement, reconciliation_id, body):
    return lambda: settlement.Reconcile(
        spb.ReconcileRequest(
            reconciliation_id=reconciliation_id,
            partner_id="fuel",
            period=spb.PeriodSelector(period_id="2026-01"),
            file_csv=(HEADER + body).encode(),
        )
    )


@pytest.mark.parametrize("points", ["99999999999999999999", "1000000000000001", "1_000", "\u0661\u0662"])
def test_points_beyond_the_ledger_maximum_or_not_ascii_digits_are_invalid_argument(settlement, points):
    body = f"R0,s1,t1,2026-01-05T09:00:00,EARN,5\nR1,s1,t1,2026-01-05T10:00:00,EARN,{points}\n"
    code, reason, details = refused(reconcile(settlement, "r-points", body))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE") and "row 2" in details


def test_a_field_over_the_csv_field_limit_is_invalid_argument(settlement):
    body = "R1,s1," + "x" * 140_000 + ",2026-01-05T10:00:00,EARN,1\n"
    code, reason, details = refused(reconcile(settlement, "r-field", body))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE") and "row 1" in details
    code, reason, details = refused(reconcile(settlement, "r-nul", "R1,s\x00,t1,2026-01-05T10:00:00,EARN,1\n"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE") and "row 1" in details


def test_two_partial_returns_of_one_receipt_reconcile_as_matched(settlement, ledger_stub):
    month.setup_ledger(ledger_stub)
    start = month.tick()
    earn, reversal = lpb.TRANSFER_CODE_EARN, lpb.TRANSFER_CODE_REVERSAL
    month.transfer(ledger_stub, "g1", "issuance:PTS:fuel", "wallet:PTS:m1", 100, "PTS", earn, receipt="G1")
    for transfer_id, points in (("g1-r1", 30), ("g1-r2", 20)):
        month.transfer(
            ledger_stub,
            transfer_id,
            "wallet:PTS:m1",
            "issuance:PTS:fuel",
            points,
            "PTS",
            reversal,
            receipt="G1",
            reverses_transfer_id="g1",
        )
    end = month.tick()
    times = [month.iso(start + micros) for micros in (1, 2, 3)]
    file_csv = (
        HEADER + f"G1,s1,t1,{times[0]},EARN,100\n"
        f"G1,s1,t1,{times[1]},EARN_REVERSAL,30\n"
        f"G1,s1,t1,{times[2]},EARN_REVERSAL,20\n"
        f"G1,s1,t1,{times[2]},EARN_REVERSAL,20\n"
    ).encode()
    made = settlement.Reconcile(
        spb.ReconcileRequest(
            reconciliation_id="rec-returns",
            partner_id="fuel",
            period=spb.PeriodSelector(
                period_id="p", start_time=timestamp_from_micros(start), end_time=timestamp_from_micros(end)
            ),
            file_csv=file_csv,
        )
    ).reconciliation
    assert [(r.file_line_number, r.status, r.partner_points, r.ledger_points) for r in made.rows] == [
        (1, spb.MATCH_STATUS_MATCHED, 100, 100),
        (2, spb.MATCH_STATUS_MATCHED, 30, 50),
        (3, spb.MATCH_STATUS_MATCHED, 20, 50),
        (4, spb.MATCH_STATUS_DUPLICATE, 20, 50),
    ]


def token_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


FORGED_TOKENS = [
    token_of(b'"x"'),
    token_of(b"5.5"),
    token_of(b"true"),
    token_of(b"null"),
    token_of(b"{}"),
    token_of(b"[]"),
    token_of(b'["fuel"]'),
    token_of(b'["fuel", "5"]'),
    token_of(b"[5, 5]"),
    token_of(b'["", 5]'),
    token_of(b'["fu\\u0000el", 5]'),
    token_of(b'["\\ud800", 5]'),
    token_of(b"99999999999999999999999"),
    token_of(b'["fuel", 99999999999999999999999]'),
    token_of(b"[" * 700),
    "not base64!",
]


@pytest.mark.parametrize("token", FORGED_TOKENS)
def test_forged_page_tokens_are_invalid_argument(settlement, token):
    for call in (
        lambda: settlement.ListPeriods(spb.ListPeriodsRequest(page_token=token)),
        lambda: settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest(page_token=token)),
    ):
        code, reason, _ = refused(call)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"), token


def test_page_tokens_this_service_returned_still_page(settlement):
    for partner in ("airline", "fuel", "hotel"):
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=month.agreement(partner, partner, 1_000)))
    first = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest(page_size=2))
    second = settlement.ListPriceAgreements(
        spb.ListPriceAgreementsRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [a.partner_id for a in (*first.agreements, *second.agreements)] == ["airline", "fuel", "hotel"]
    assert not second.next_page_token
