"""The coalition CA: what `coalition-pki` issues, and the development CA that services make on first start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography import x509

from services import pki
from tests.support.servers import REPO_ROOT


def _verify_all_signed_by_the_ca(directory: str) -> None:
    with open(os.path.join(directory, pki.CA_CERT_FILE), "rb") as file:
        ca = x509.load_pem_x509_certificate(file.read())
    for identity in pki.DEVELOPMENT_IDENTITIES:
        with open(pki.cert_path(directory, identity), "rb") as file:
            certificate = x509.load_pem_x509_certificate(file.read())
        certificate.verify_directly_issued_by(ca)
        assert certificate.subject.rfc4514_string() == f"CN={identity}"
        assert oct(os.stat(pki.key_path(directory, identity)).st_mode & 0o777) == "0o600"


def test_services_starting_at_once_make_one_development_ca(tmp_path):
    """Three services started together in development each make the CA if it is missing: one wins."""
    directory = str(tmp_path / "tls")
    code = "import sys; from services import pki; pki.ensure_development_pki(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", code, directory], cwd=REPO_ROOT) for _ in range(6)]
    assert [process.wait(timeout=60) for process in processes] == [0] * 6
    _verify_all_signed_by_the_ca(directory)


def test_a_ca_left_half_made_is_made_again(tmp_path):
    directory = str(tmp_path / "tls")
    pki.ensure_development_pki(directory)
    os.remove(os.path.join(directory, pki.CA_CERT_FILE))  # as if killed between the CA's key and certificate
    pki.ensure_development_pki(directory)
    _verify_all_signed_by_the_ca(directory)


def test_the_cli_creates_a_ca_once_and_issues_and_rotates_certificates(tmp_path, capsys):
    directory, out = str(tmp_path / "ca"), str(tmp_path / "out")
    assert pki.main(["init-ca", directory]) == 0
    with pytest.raises(FileExistsError):
        pki.main(["init-ca", directory])
    assert pki.main(["issue", directory, "partners", "--dns", "partners.internal", "--out", out]) == 0
    with open(pki.cert_path(out, "partners"), "rb") as file:
        first = x509.load_pem_x509_certificate(file.read())
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"partners", "partners.internal"}
    assert pki.main(["issue", directory, "partners", "--out", out]) == 0  # rotation: new key, new certificate
    with open(pki.cert_path(out, "partners"), "rb") as file:
        assert x509.load_pem_x509_certificate(file.read()).serial_number != first.serial_number
    assert "issued partners" in capsys.readouterr().out
