"""Fixtures: a real ledger (from tests/conftest.py) and a real settlement server on loopback."""

from __future__ import annotations

import pytest

from coalition.ledger.v1 import ledger_pb2_grpc
from coalition.settlement.v1 import settlement_pb2_grpc
from services.settlement.server import SettlementSettings, start
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer
from tests.support.tls import channel as tls_channel
from tests.support.tls import transport as tls_transport

ADMIN_KEY = "test-admin-key-settlement"
ADMIN_METADATA = (("authorization", f"Bearer {ADMIN_KEY}"),)


@pytest.fixture
def settlement_database_url(backend, tmp_path):
    url, cleanup = new_database_url(backend, tmp_path, "settlement")
    yield url
    cleanup()


def settlement_settings(database_url: str, ledger_address: str) -> SettlementSettings:
    return SettlementSettings(
        database_url=database_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger_address,
        time_zone="Europe/Amsterdam",
        admin_api_key=ADMIN_KEY,
        close_delay_seconds=0,
        audit_lag_seconds=0,
        db_pool_size=2,
        db_statement_timeout_ms=15_000,
        grpc_grace_period_seconds=1,
        grpc_concurrent_rpcs_max=16,
        transport=tls_transport("settlement"),
    )


@pytest.fixture
def settlement_server(settlement_database_url, ledger_server):
    settings = settlement_settings(settlement_database_url, ledger_server.address)
    server = ThreadedServer(lambda: start(settings))
    yield server
    server.stop()


class AdminStub:
    """The settlement stub with the admin key on every call and a deadline."""

    def __init__(self, channel) -> None:
        self._stub = settlement_pb2_grpc.SettlementServiceStub(channel)

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kwargs: method(
            request,
            metadata=kwargs.pop("metadata", ADMIN_METADATA),
            timeout=kwargs.pop("timeout", 60),
            **kwargs,
        )


@pytest.fixture
def settlement(settlement_server):
    with tls_channel(settlement_server.address) as channel:
        yield AdminStub(channel)


@pytest.fixture
def ledger_stub(ledger_server):
    with tls_channel(ledger_server.address) as channel:
        yield ledger_pb2_grpc.LedgerServiceStub(channel)
