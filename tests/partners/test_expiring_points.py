"""A member-level read of points expiring per month (issue 10), through partners to the ledger's lots."""

from __future__ import annotations

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.ledger.v1 import ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from tests.support.tls import channel as tls_channel


def test_a_partner_reads_what_of_a_members_points_expires_per_month(coalition):
    with tls_channel(coalition.ledger_address) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        policy = lpb.ExpiryPolicy(currency_code="PTS", kind=lpb.EXPIRY_POLICY_KIND_FIXED, months=6)
        ledger.SetExpiryPolicy(lpb.SetExpiryPolicyRequest(policy=policy), timeout=10)
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    earned, _ = coalition.earn(shop, member_id, [1000, 2000])
    points = earned.pricing.points
    assert points > 0
    request = pb.GetMemberExpiringPointsRequest(member=pb.MemberIdentity(member_id=member_id), currency_code="PTS")
    response = coalition.call("GetMemberExpiringPoints", request, shop.key)
    assert response.member_id == member_id and len(response.months) == 12
    assert sum(month.amount for month in response.months) == points  # all of it expires within the year
    assert [m.amount for m in response.months].count(0) == 11
    # Another partner's programme currency is that partner's data.
    other = pb.GetMemberExpiringPointsRequest(member=request.member, currency_code="HOTELPTS")
    with pytest.raises(grpc.RpcError) as raised:
        coalition.call("GetMemberExpiringPoints", other, shop.key)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info_of(raised.value).reason == "OTHER_PARTNER_CURRENCY"
    # The operator may ask for any currency; no wallet in it: no months.
    assert list(coalition.call("GetMemberExpiringPoints", other).months) == []
