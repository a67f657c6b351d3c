"""The demo seed is idempotent, the demo POS client runs against it, a real partner is never taken for the demo's.

The whole rule (development only, nothing but the demo) is shown across services in tests/test_demo_seed.py.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.common.mode import DEVELOPMENT, ENV_SETTING
from services.partners import demo, demo_client, server
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread, start_partners_thread
from tests.support.snapshot import snapshot
from tests.support.tls import transport as tls_transport


def _ledger_and_partners(tmp_path):
    """A ledger and a partners server on fresh SQLite files; the partners settings too."""
    ledger = start_ledger_thread(new_database_url("sqlite", tmp_path, "ledger")[0])
    settings = dataclasses.replace(
        server.PartnersSettings.from_env(),
        database_url=new_database_url("sqlite", tmp_path, "partners")[0],
        listen_address="127.0.0.1:0",
        ledger_address=ledger.address,
        grpc_grace_period_seconds=1,
    )
    return ledger, settings, ThreadedServer(lambda: server.start(settings))


def test_demo_seed_twice_then_the_demo_client_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_SETTING, DEVELOPMENT)  # what `make run` sets; tests/test_demo_seed.py has the rule
    ledger, _, partners = _ledger_and_partners(tmp_path)
    try:
        for _ in range(2):
            asyncio.run_coroutine_threadsafe(server.seed_demo(), partners._loop).result(timeout=60)
        demo_client.run(partners.address, tls_transport())
        demo_client.run(partners.address, tls_transport())
    finally:
        partners.stop()
        ledger.stop()
    output = capsys.readouterr().out
    assert "demo-fresh-mart-key" in output
    assert "60000 HOTELPTS -> 25000 AIRMILES" in output
    assert "AIRMILES" in output.split("5. Balances")[-1]


def test_a_real_partner_using_a_demo_id_is_not_mistaken_for_the_demo(tmp_path, monkeypatch):
    # Same id as the demo's FreshMart, another name: the seed must not give it the published key.
    monkeypatch.setenv(ENV_SETTING, DEVELOPMENT)
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    partners = start_partners_thread(partners_url, ledger.address, ADMIN_KEY)
    client = Coalition(partners.address, MovableClock(), ledger.address)
    try:
        real = pb.Partner(partner_id="fresh-mart", kind=pb.PARTNER_KIND_RETAILER, display_name="Fresh Mart GmbH")
        client.call("RegisterPartner", pb.RegisterPartnerRequest(partner=real))
        before = snapshot(partners_url)
        asyncio.run_coroutine_threadsafe(server.seed_demo(), partners._loop).result(timeout=60)
        assert snapshot(partners_url) == before
        request = pb.GetPartnerRequest(partner_id="fresh-mart")
        assert client.error("GetPartner", request, demo.DEMO_KEYS["fresh-mart"]) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_API_KEY",
        )
    finally:
        client.close()
        partners.stop()
        ledger.stop()


def test_production_refuses_to_start_while_the_published_demo_keys_are_active(tmp_path, monkeypatch):
    """A database seeded by `make run` and then started in production: its demo keys would open it."""
    from services import pki
    from services.common.config import ConfigError
    from services.common.tls import Transport

    monkeypatch.setenv(ENV_SETTING, DEVELOPMENT)
    ledger, settings, partners = _ledger_and_partners(tmp_path)
    try:
        asyncio.run_coroutine_threadsafe(server.seed_demo(), partners._loop).result(timeout=60)
    finally:
        partners.stop()
    directory = str(tmp_path / "ca")
    pki.init_ca(directory)
    files = pki.issue(directory, "partners", dns_names=("localhost",))
    monkeypatch.setenv(ENV_SETTING, "production")
    production = dataclasses.replace(
        settings,
        admin_api_key="a-production-admin-key",
        alias_hash_key="a-production-alias-key",
        transport=Transport(False, f"{directory}/{pki.CA_CERT_FILE}", files.certificate_path, files.key_path),
    )
    try:
        with pytest.raises(ConfigError, match="published demo API keys of fresh-mart, fuelco, grand-hotels, skyair"):
            asyncio.run(server.start(production))
    finally:
        ledger.stop()
