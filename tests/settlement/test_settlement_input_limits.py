"""Bad input over real gRPC (settlement + ledger on loopback, SQLite and PostgreSQL): never INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros


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
