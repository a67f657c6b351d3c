"""TLS: with a certificate and key configured, the partners server speaks TLS only.

The certificate is self-signed and made here (with `cryptography` when installed, else the
`openssl` command), so the test needs no files from outside.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import subprocess

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common.errors import error_info_of
from services.partners.server import PartnersSettings, start
from tests.partners.conftest import ADMIN_KEY, unique
from tests.support.databases import new_database_url
from tests.support.servers import ThreadedServer, start_ledger_thread

CALL_TIMEOUT_SECONDS = 10


def _self_signed_with_cryptography(cert_path, key_path) -> bool:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return True


def _self_signed(directory):
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if _self_signed_with_cryptography(cert_path, key_path):
        return cert_path, key_path
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("neither the cryptography package nor the openssl command is available")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert_path, key_path


def test_partners_server_with_a_certificate_serves_over_tls_only(tmp_path):
    cert_path, key_path = _self_signed(tmp_path)
    ledger_url, _ = new_database_url("sqlite", tmp_path, "ledger")
    partners_url, _ = new_database_url("sqlite", tmp_path, "partners")
    ledger = start_ledger_thread(ledger_url)
    settings = dataclasses.replace(
        PartnersSettings.from_env(),
        database_url=partners_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger.address,
        admin_api_key=ADMIN_KEY,
        grpc_grace_period_seconds=1,
        tls_certificate_path=str(cert_path),
        tls_private_key_path=str(key_path),
    )
    partners = ThreadedServer(lambda: start(settings))
    admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_path.read_bytes())
        with grpc.secure_channel(partners.address, credentials) as channel:
            stub = partners_pb2_grpc.PartnersServiceStub(channel)
            partner = pb.Partner(partner_id=unique("p"), kind=pb.PARTNER_KIND_RETAILER, display_name="Over TLS")
            registered = stub.RegisterPartner(
                pb.RegisterPartnerRequest(partner=partner), metadata=admin, timeout=CALL_TIMEOUT_SECONDS
            )
            assert registered.created and registered.partner.partner_id == partner.partner_id
            # Authentication still applies over TLS.
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListPartners(pb.ListPartnersRequest(), timeout=CALL_TIMEOUT_SECONDS)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_info_of(raised.value).reason == "MISSING_CREDENTIALS"
        # A plaintext client cannot talk to it.
        with grpc.insecure_channel(partners.address) as channel:
            stub = partners_pb2_grpc.PartnersServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.ListPartners(pb.ListPartnersRequest(), metadata=admin, timeout=3)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        partners.stop()
        ledger.stop()


def test_a_certificate_without_its_key_refuses_to_start(monkeypatch):
    from services.common.config import ConfigError

    monkeypatch.setenv("COALITION_PARTNERS_TLS_CERT_PATH", "/nowhere/cert.pem")
    monkeypatch.delenv("COALITION_PARTNERS_TLS_KEY_PATH", raising=False)
    with pytest.raises(ConfigError):
        PartnersSettings.from_env()
