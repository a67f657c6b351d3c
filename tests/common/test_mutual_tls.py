"""Every service speaks mutual TLS only, and reads the caller from the client certificate.

SQLite only: the transport does not depend on the database (every other integration test
already runs over the same TLS on both databases).
"""

from __future__ import annotations

import dataclasses
import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coalition.partners.v1 import partners_pb2, partners_pb2_grpc
from coalition.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services import pki
from services.common.errors import error_info_of
from services.common.tls import Transport
from services.ledger.server import LedgerSettings
from services.ledger.server import start as start_ledger
from services.settlement.server import start as start_settlement
from tests.partners.conftest import ADMIN_KEY
from tests.settlement.conftest import settlement_settings
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread, start_partners_thread
from tests.support.tls import transport

TIMEOUT = 10
ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


@pytest.fixture(scope="module")
def coalition(tmp_path_factory):
    directory = tmp_path_factory.mktemp("coalition")
    ledger = start_ledger_thread(new_database_url("sqlite", directory, "ledger")[0])
    partners = start_partners_thread(new_database_url("sqlite", directory, "partners")[0], ledger.address, ADMIN_KEY)
    settings = dataclasses.replace(
        settlement_settings(new_database_url("sqlite", directory, "settlement")[0], ledger.address),
        admin_api_key=ADMIN_KEY,
    )
    settlement = ThreadedServer(lambda: start_settlement(settings))
    yield {"ledger": ledger.address, "partners": partners.address, "settlement": settlement.address}
    settlement.stop()
    partners.stop()
    ledger.stop()


@pytest.fixture(scope="module")
def foreign_operator(tmp_path_factory) -> Transport:
    """An `operator` certificate from a CA the coalition never heard of; it trusts the coalition's CA."""
    directory = str(tmp_path_factory.mktemp("foreign-ca"))
    pki.init_ca(directory, "Some other CA")
    files = pki.issue(directory, "operator", dns_names=pki.LOOPBACK_DNS, ip_addresses=pki.LOOPBACK_IPS)
    return Transport(False, transport().ca_path, files.certificate_path, files.key_path)


def _a_real_call(service: str, channel: grpc.Channel):
    """One call each service answers to the operator."""
    if service == "partners":
        stub = partners_pb2_grpc.PartnersServiceStub(channel)
        return stub.ListPartners(partners_pb2.ListPartnersRequest(), metadata=ADMIN, timeout=TIMEOUT)
    if service == "settlement":
        stub = settlement_pb2_grpc.SettlementServiceStub(channel)
        return stub.ListPeriods(settlement_pb2.ListPeriodsRequest(), metadata=ADMIN, timeout=TIMEOUT)
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)


SERVICES = ("ledger", "partners", "settlement")


@pytest.mark.parametrize("service", SERVICES)
def test_a_call_with_the_operator_certificate_is_served(coalition, service):
    with transport("operator").channel(coalition[service]) as channel:
        assert _a_real_call(service, channel) is not None


@pytest.mark.parametrize("service", SERVICES)
def test_no_client_certificate_a_foreign_one_or_plaintext_is_refused(coalition, foreign_operator, service):
    ca = open(transport().ca_path, "rb").read()  # noqa: SIM115 (tiny file)
    without_certificate = grpc.secure_channel(coalition[service], grpc.ssl_channel_credentials(root_certificates=ca))
    channels = {
        "no client certificate": without_certificate,
        "a certificate the coalition CA did not sign": foreign_operator.channel(coalition[service]),
        "plaintext": grpc.insecure_channel(coalition[service]),
    }
    for case, channel in channels.items():
        with channel, pytest.raises(grpc.RpcError) as raised:
            _a_real_call(service, channel)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, (service, case)


@pytest.mark.parametrize("service", ("partners", "settlement"))
def test_the_admin_key_needs_the_operator_certificate(coalition, service):
    with transport("pos-demo").channel(coalition[service]) as channel, pytest.raises(grpc.RpcError) as raised:
        _a_real_call(service, channel)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info_of(raised.value).reason == "OPERATOR_CERTIFICATE_REQUIRED"
    assert "pos-demo" in raised.value.details()


def test_a_rotated_certificate_and_ca_serve_new_connections_without_a_restart(tmp_path):
    """Replace the ledger's certificate, key and CA on disk: the next connection uses them."""
    old_ca, new_ca = str(tmp_path / "old-ca"), str(tmp_path / "new-ca")
    served = tmp_path / "served"
    served.mkdir()
    for directory in (old_ca, new_ca):
        pki.init_ca(directory)
        for identity in ("ledger", "operator"):
            pki.issue(directory, identity, dns_names=pki.LOOPBACK_DNS, ip_addresses=pki.LOOPBACK_IPS)

    def clients_of(directory: str) -> Transport:
        return Transport(
            False,
            f"{directory}/{pki.CA_CERT_FILE}",
            pki.cert_path(directory, "operator"),
            pki.key_path(directory, "operator"),
        )

    def serve_from(directory: str) -> None:
        for name in (pki.CA_CERT_FILE, "ledger.pem", "ledger.key"):
            shutil.copyfile(f"{directory}/{name}", served / f"{name}.new")
            (served / f"{name}.new").replace(served / name)

    serve_from(old_ca)
    url, _ = new_database_url("sqlite", tmp_path, "ledger")
    settings = dataclasses.replace(
        LedgerSettings.from_env(),
        database_url=url,
        listen_address="127.0.0.1:0",
        grpc_grace_period_seconds=1,
        transport=Transport(
            False, str(served / pki.CA_CERT_FILE), str(served / "ledger.pem"), str(served / "ledger.key")
        ),
    )
    ledger = ThreadedServer(lambda: start_ledger(settings))
    try:
        with clients_of(old_ca).channel(ledger.address) as channel:
            assert _a_real_call("ledger", channel).status == health_pb2.HealthCheckResponse.SERVING
        serve_from(new_ca)
        with clients_of(new_ca).channel(ledger.address) as channel:
            assert _a_real_call("ledger", channel).status == health_pb2.HealthCheckResponse.SERVING
        with clients_of(old_ca).channel(ledger.address) as channel, pytest.raises(grpc.RpcError) as raised:
            _a_real_call("ledger", channel)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ledger.stop()
