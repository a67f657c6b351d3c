"""Issue 7 point 4: health follows the database, for each service, without a restart.

Each service runs against PostgreSQL through a TCP proxy the test cuts and restores (the real
PostgreSQL server is never stopped). Health ("" and the service's name) must go NOT_SERVING soon
after the cut and SERVING again after the restore; graceful shutdown leaves it NOT_SERVING.
Before: health answered SERVING throughout the outage.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from tests.common.tcp_proxy import TcpProxy
from tests.support.databases import PostgresSchema, require_postgres
from tests.support.servers import ThreadedServer, start_ledger_thread
from tests.support.tls import channel as tls_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The target is 3 s; the bound leaves room for a loaded 2-core machine.
DETECTION_SECONDS_MAX = 5.0
RECOVERY_SECONDS_MAX = 10.0


def _through(proxy: TcpProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _start(service: str, database_url: str, ledger_address: str) -> ThreadedServer:
    if service == "ledger":
        return start_ledger_thread(database_url)
    if service == "partners":
        from services.partners.server import PartnersSettings, start

        settings = dataclasses.replace(
            PartnersSettings.from_env(),
            database_url=database_url,
            listen_address="127.0.0.1:0",
            ledger_address=ledger_address,
            grpc_grace_period_seconds=1,
            pending_earn_recovery_interval_seconds=3_600,
        )
        return ThreadedServer(lambda: start(settings))
    from services.settlement.server import SettlementSettings, start

    settings = dataclasses.replace(
        SettlementSettings.from_env(),
        database_url=database_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger_address,
        grpc_grace_period_seconds=1,
    )
    return ThreadedServer(lambda: start(settings))


SERVICE_NAMES = {
    "ledger": "coalition.ledger.v1.LedgerService",
    "partners": "coalition.partners.v1.PartnersService",
    "settlement": "coalition.settlement.v1.SettlementService",
}


def _statuses(stub, service_name: str) -> tuple[int, int]:
    return tuple(
        stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2).status for name in ("", service_name)
    )


def _seconds_until(stub, service_name: str, status: int, timeout_seconds: float) -> float:
    started = time.monotonic()
    while _statuses(stub, service_name) != (status, status):
        if time.monotonic() - started > timeout_seconds:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def ledger_for_others(tmp_path):
    ledger = start_ledger_thread(f"sqlite:///{tmp_path}/ledger.db")
    yield ledger
    ledger.stop()


@pytest.mark.parametrize("service", ["ledger", "partners", "settlement"])
def test_health_is_not_serving_while_postgres_is_cut_and_serving_again_after(service, ledger_for_others):
    require_postgres()
    schema = PostgresSchema(service)
    url = make_url(schema.url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    server = _start(service, _through(proxy, schema.url), ledger_for_others.address)
    try:
        with tls_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert _statuses(stub, SERVICE_NAMES[service]) == (SERVING, SERVING)

            proxy.cut()
            detected = _seconds_until(stub, SERVICE_NAMES[service], NOT_SERVING, 15)
            assert detected <= DETECTION_SECONDS_MAX, f"NOT_SERVING after {detected:.1f} s"

            proxy.restore()
            recovered = _seconds_until(stub, SERVICE_NAMES[service], SERVING, 20)
            assert recovered <= RECOVERY_SECONDS_MAX, f"SERVING again after {recovered:.1f} s"
            print(f"\n{service}: NOT_SERVING {detected:.2f} s after the cut, SERVING {recovered:.2f} s after restore")
    finally:
        server.stop()
        proxy.cut()
        schema.drop()
    # Graceful shutdown: NOT_SERVING for good, and the database watch is gone so nothing flips it back.
    assert set(server.running.health._server_status.values()) == {NOT_SERVING}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_reachable_database_keeps_health_serving(backend, tmp_path):
    from tests.support.databases import new_database_url

    url, cleanup = new_database_url(backend, tmp_path, "ledger")
    server = start_ledger_thread(url)
    try:
        with tls_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 3  # three database checks
            while time.monotonic() < deadline:
                assert _statuses(stub, SERVICE_NAMES["ledger"]) == (SERVING, SERVING)
                time.sleep(0.2)
    finally:
        server.stop()
        cleanup()
