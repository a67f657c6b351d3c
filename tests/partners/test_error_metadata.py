"""ErrorInfo metadata a till can act on: INVALID_BASKET names the line and the field,
INSUFFICIENT_POINTS says how many points were requested and how many are available."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from services.partners import earn_pricing
from services.partners.model import DomainError
from tests.partners.conftest import unique

GOOD = earn_pricing.BasketLine(line_number=1, sku="apples", category="produce", quantity=1000, amount=100)


def error_metadata(coalition, method: str, request, key: str) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as raised:
        coalition.call(method, request, key)
    info = error_info_of(raised.value)
    return {"reason": info.reason, **info.metadata}


@pytest.mark.parametrize(
    ("mistake", "field"),
    [
        ({"line_number": 2}, "lines.line_number"),  # the same number as the first line
        ({"category": ""}, "lines.category"),
        ({"sku": "x" * 65}, "lines.sku"),
        ({"amount": -1}, "lines.amount"),
        ({"quantity": 0}, "lines.quantity"),
    ],
)
def test_every_basket_line_mistake_names_its_line_and_field(mistake, field):
    first = dataclasses.replace(GOOD, line_number=2)
    with pytest.raises(DomainError) as refused:
        earn_pricing.check_basket([first, dataclasses.replace(GOOD, **mistake)])
    assert (refused.value.reason, refused.value.metadata["field"]) == ("INVALID_BASKET", field)
    assert refused.value.metadata["line"] == (2 if "line_number" in mistake else 1)


def test_insufficient_points_says_requested_and_available(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [2_000])  # 10 points
    request = pb.AuthorizeRedemptionRequest(
        request_id=unique("hold"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        currency_code="PTS",
        amount=11,
    )
    expected = {"reason": "INSUFFICIENT_POINTS", "requested": "11", "available": "10", "currency": "PTS"}
    assert error_metadata(coalition, "AuthorizeRedemption", request, shop.key) == expected
    assert error_metadata(coalition, "AuthorizeRedemption", request, shop.key) == expected  # the retry too
