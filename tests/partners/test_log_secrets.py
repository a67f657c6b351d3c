"""Every partners request is logged (request id, method, partner, outcome), never its bearer
key: not the admin key, not a partner's key as issued, used, rotated or presented wrongly. The
partners server runs as its own process so its whole log, as written, can be searched."""

from __future__ import annotations

import dataclasses

from coalition.partners.v1 import partners_pb2 as pb
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_process


def test_keys_and_secrets_never_appear_in_the_partners_log(tmp_path):
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    log_path = tmp_path / "partners.log"
    ledger = start_ledger_thread(ledger_url)
    partners = start_partners_process(partners_url, ledger.address, ADMIN_KEY, str(log_path))
    client = Coalition(partners.address, MovableClock(), ledger.address)
    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        client.earn(shop, member_id, [1000])
        rotate = pb.RotateApiKeyRequest(partner_id=shop.partner_id, key_id=shop.key_id, request_id=unique("rot"))
        rotated = client.call("RotateApiKey", rotate)
        client.earn(dataclasses.replace(shop, key=rotated.api_key), member_id, [1000])
        wrong = rotated.api_key[:-4] + "abcd"
        refused = client.error("GetPartner", pb.GetPartnerRequest(partner_id=shop.partner_id), wrong)
        assert refused[1] == "INVALID_API_KEY"
    finally:
        client.close()
        partners.stop()
        ledger.stop()
    logged = log_path.read_text()
    assert "rpc_finished" in logged and "api_key_issued" in logged and "INVALID_API_KEY" in logged
    for secret in (ADMIN_KEY, shop.key, rotated.api_key, wrong):
        assert secret not in logged


def test_no_admin_key_or_secret_appears_in_the_settlement_or_ledger_log(tmp_path):
    """Settlement takes the admin key (right and wrong); the ledger sees partners' and settlement's calls."""
    from coalition.settlement.v1 import settlement_pb2, settlement_pb2_grpc
    from services.common.errors import error_info_of
    from tests.support.servers import ProcessServer, free_port
    from tests.support.tls import channel as tls_channel

    ledger_log, settlement_log = tmp_path / "ledger.log", tmp_path / "settlement.log"
    ledger_port, settlement_port = free_port(), free_port()
    ledger = ProcessServer(
        "services.ledger.server",
        {
            "COALITION_LEDGER_DATABASE_URL": new_database_url("sqlite", tmp_path, "ledger")[0],
            "COALITION_LEDGER_LISTEN_ADDRESS": f"127.0.0.1:{ledger_port}",
            "COALITION_LOG_LEVEL": "debug",
        },
        f"127.0.0.1:{ledger_port}",
        str(ledger_log),
    )
    settlement = ProcessServer(
        "services.settlement.server",
        {
            "COALITION_SETTLEMENT_DATABASE_URL": new_database_url("sqlite", tmp_path, "settlement")[0],
            "COALITION_SETTLEMENT_LISTEN_ADDRESS": f"127.0.0.1:{settlement_port}",
            "COALITION_LEDGER_ADDRESS": ledger.address,
            "COALITION_ADMIN_API_KEY": ADMIN_KEY,
            "COALITION_LOG_LEVEL": "debug",
        },
        f"127.0.0.1:{settlement_port}",
        str(settlement_log),
    )
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    partners = start_partners_process(partners_url, ledger.address, ADMIN_KEY, str(tmp_path / "partners.log"))
    client = Coalition(partners.address, MovableClock(), ledger.address)
    wrong = ADMIN_KEY + "-wrong"
    try:
        shop = client.register_partner()
        member_id, _ = client.enroll()
        client.earn(shop, member_id, [1000])
        with tls_channel(settlement.address) as channel:
            stub = settlement_pb2_grpc.SettlementServiceStub(channel)
            stub.ListPeriods(
                settlement_pb2.ListPeriodsRequest(), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=10
            )
            try:
                stub.ListPeriods(
                    settlement_pb2.ListPeriodsRequest(), metadata=(("authorization", f"Bearer {wrong}"),), timeout=10
                )
                raise AssertionError("a wrong admin key was accepted")
            except Exception as error:  # grpc.RpcError
                assert error_info_of(error).reason == "ADMIN_REQUIRED"
    finally:
        client.close()
        partners.stop()
        settlement.stop()
        ledger.stop()
    for path in (ledger_log, settlement_log):
        logged = path.read_text()
        assert "rpc_finished" in logged, path
        for secret in (ADMIN_KEY, wrong, shop.key, "coalition-dev-admin-key"):
            assert secret not in logged, (path, secret)
    assert "caller=partners" in ledger_log.read_text() or '"caller": "partners"' in ledger_log.read_text()
