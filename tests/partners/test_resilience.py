"""The ledger goes away mid-flow: callers get UNAVAILABLE and a retry with the same ids is safe."""

from __future__ import annotations

import dataclasses
import time

import grpc

from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from services.partners.server import PartnersSettings, start
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, free_port, start_ledger_thread


def test_earn_while_the_ledger_is_down_is_unavailable_and_the_retry_posts_once(tmp_path):
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger_address = f"127.0.0.1:{free_port()}"
    ledger = start_ledger_thread(ledger_url, listen_address=ledger_address)
    settings = dataclasses.replace(
        PartnersSettings.from_env(),
        database_url=partners_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger_address,
        admin_api_key=ADMIN_KEY,
        ledger_deadline_ms=500,
        grpc_grace_period_seconds=1,
    )
    clock = MovableClock()
    partners = ThreadedServer(lambda: start(settings, clock))
    client = Coalition(partners.address, clock, ledger_address)
    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        client.earn(shop, member_id, [1000])  # the wallet exists now
        ledger.stop()
        request = pb.EarnRequest(
            request_id=unique("earn"),
            point_of_sale=shop.pos(),
            receipt_id=unique("r"),
            member=pb.MemberIdentity(member_id=member_id),
            lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
        )
        try:
            client.call("Earn", request, shop.key)
            raise AssertionError("the earn cannot succeed without a ledger")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info_of(error).reason == "LEDGER_UNAVAILABLE"
        ledger = start_ledger_thread(ledger_url, listen_address=ledger_address)
        deadline = time.monotonic() + 15
        while True:
            try:
                response = client.call("Earn", request, shop.key)
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.pricing.points == 20
        client.call("Earn", request, shop.key)
        assert client.balance(member_id).posted == 5 + 20
    finally:
        client.close()
        partners.stop()
        ledger.stop()


def test_a_new_earn_rule_version_applies_from_its_start(coalition):
    shop = coalition.register_partner(base_rate="1")
    member_id, _ = coalition.enroll()
    assert coalition.earn(shop, member_id, [1000])[0].pricing.points == 10
    coalition.create_earn_rule(shop.partner_id, base_rate="2", valid_from_time=timestamp_from_micros(coalition.clock()))
    response, _ = coalition.earn(shop, member_id, [1000])
    assert (response.pricing.points, response.pricing.rule_version) == (20, 2)
    rules = coalition.call("ListEarnRules", pb.ListEarnRulesRequest(partner_id=shop.partner_id), shop.key).rules
    assert [rule.version for rule in rules] == [2, 1]
