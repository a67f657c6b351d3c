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
