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
