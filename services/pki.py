"""The coalition CA: a certificate authority and the certificates it issues to services and tools.

Each certificate names one identity in its common name (`ledger`, `partners`, `settlement`,
`operator`, or a till's `pos-<partner>`); services read the caller's identity from it. A
certificate serves both as a server certificate and as a client certificate, so one key pair
per process is enough.

`make run` creates a development CA under var/tls on first start. In production the operator
runs the same commands on a machine that keeps the CA key offline:

    coalition-pki init-ca /secure/ca
    coalition-pki issue /secure/ca partners --dns partners.internal --out /etc/coalition/tls
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_VALID_DAYS = 10 * 365
CERT_VALID_DAYS = 397
# The services, the operator's tools and a development till: what `make run` issues.
DEVELOPMENT_IDENTITIES = ("ledger", "partners", "settlement", "operator", "pos-demo")
# Names every development certificate carries, so clients on this machine verify any of them.
LOOPBACK_DNS = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    certificate_path: str
    key_path: str


def cert_path(directory: str, identity: str) -> str:
    return os.path.join(directory, f"{identity}.pem")


def key_path(directory: str, identity: str) -> str:
    return os.path.join(directory, f"{identity}.key")


def _write_private(path: str, data: bytes) -> None:
    # Readable by the owner only from the moment it exists; replaced whole, never seen half written.
    temporary = f"{path}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _write_public(path: str, data: bytes) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, path)  # a server re-reading its certificate never sees half a file


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_ca(directory: str, name: str = "Coalition CA") -> None:
    """A new CA key and self-signed certificate in `directory`; refuses to overwrite one."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.exists(os.path.join(directory, CA_KEY_FILE)):
        raise FileExistsError(f"{directory} already holds a CA key; refusing to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(os.path.join(directory, CA_KEY_FILE), _key_pem(key))
    _write_public(os.path.join(directory, CA_CERT_FILE), certificate.public_bytes(serialization.Encoding.PEM))


def issue(
    ca_directory: str,
    identity: str,
    out_directory: str | None = None,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    valid_days: int = CERT_VALID_DAYS,
) -> IdentityFiles:
    """A key and a certificate for `identity`, signed by the CA in `ca_directory`.

    Issuing again for the same identity replaces both files: that is how a certificate is rotated.
    """
    if not identity or not all(c.isalnum() or c in "-_." for c in identity):
        raise ValueError(f"identity {identity!r} must be 1+ characters of A-Z a-z 0-9 - _ .")
    out_directory = out_directory or ca_directory
    os.makedirs(out_directory, mode=0o700, exist_ok=True)
    with open(os.path.join(ca_directory, CA_KEY_FILE), "rb") as file:
        ca_key = serialization.load_pem_private_key(file.read(), password=None)
    with open(os.path.join(ca_directory, CA_CERT_FILE), "rb") as file:
        ca_certificate = x509.load_pem_x509_certificate(file.read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(identity), *(x509.DNSName(n) for n in dns_names)]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_certificate.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = IdentityFiles(cert_path(out_directory, identity), key_path(out_directory, identity))
    _write_private(files.key_path, _key_pem(key))
    _write_public(files.certificate_path, certificate.public_bytes(serialization.Encoding.PEM))
    return files


def ensure_development_pki(directory: str) -> None:
    """The development CA and every development identity under `directory`, made once.

    Services started at the same moment as separate processes may all get here first: an
    exclusive lock on a file in the directory lets one make the files while the others wait.
    A CA left half made (a process killed between its key and its certificate) is made again.
    """
    import fcntl

    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ca_key, ca_cert = os.path.join(directory, CA_KEY_FILE), os.path.join(directory, CA_CERT_FILE)
        if not (os.path.exists(ca_key) and os.path.exists(ca_cert)):
            for identity in DEVELOPMENT_IDENTITIES:  # anything signed by a lost CA key is useless
                for path in (cert_path(directory, identity), key_path(directory, identity)):
                    if os.path.exists(path):
                        os.remove(path)
            if os.path.exists(ca_key):
                os.remove(ca_key)
            init_ca(directory, "Coalition development CA")
        for identity in DEVELOPMENT_IDENTITIES:
            if not (os.path.exists(cert_path(directory, identity)) and os.path.exists(key_path(directory, identity))):
                issue(directory, identity, dns_names=LOOPBACK_DNS, ip_addresses=LOOPBACK_IPS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coalition-pki",
        description="The coalition CA: create it, and issue a certificate per service or tool identity.",
        epilog=(
            "examples:\n"
            "  coalition-pki init-ca /secure/ca\n"
            "  coalition-pki issue /secure/ca ledger --dns ledger.internal --out /etc/coalition/tls\n"
            "  coalition-pki issue /secure/ca operator --out ~/.coalition\n"
            "identities the services know: ledger, partners, settlement, operator; tills: pos-<partner>"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init-ca", help="create a CA key and certificate in DIR (never overwrites)")
    init.add_argument("directory", metavar="DIR")
    init.add_argument("--name", default="Coalition CA", help="the CA's common name")
    issue_command = commands.add_parser(
        "issue", help="issue (or rotate) IDENTITY.pem and IDENTITY.key signed by the CA in CA_DIR"
    )
    issue_command.add_argument("ca_directory", metavar="CA_DIR")
    issue_command.add_argument("identity", metavar="IDENTITY")
    issue_command.add_argument("--out", metavar="DIR", help="where to write the files (default: CA_DIR)")
    issue_command.add_argument("--dns", action="append", default=[], help="a host name clients dial (repeatable)")
    issue_command.add_argument("--ip", action="append", default=[], help="an IP address clients dial (repeatable)")
    issue_command.add_argument("--days", type=int, default=CERT_VALID_DAYS, help="validity in days")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init-ca":
        init_ca(args.directory, args.name)
        print(f"CA created: {os.path.join(args.directory, CA_CERT_FILE)} (keep {CA_KEY_FILE} offline)")
        return 0
    files = issue(args.ca_directory, args.identity, args.out, tuple(args.dns), tuple(args.ip), args.days)
    print(f"issued {args.identity}: {files.certificate_path} {files.key_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
