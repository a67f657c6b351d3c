"""Mutual TLS between every caller and every service, and the caller's identity it proves.

Every server accepts only TLS connections whose client certificate the coalition CA signed;
every client presents its own certificate. The identity is the certificate's common name
(services/pki.py issues them). One development switch, `COALITION_DEV_PLAINTEXT=1`, serves
and dials plaintext instead; production refuses it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import grpc

from services.common.config import ConfigError, env_choice, env_str
from services.common.mode import DEVELOPMENT, ENV_SETTING, is_development

CA_SETTING = "COALITION_TLS_CA_PATH"
DEV_PLAINTEXT_SETTING = "COALITION_DEV_PLAINTEXT"
DEV_PKI_DIR_SETTING = "COALITION_DEV_PKI_DIR"
DEV_PKI_DIR_DEFAULT = "var/tls"
# Settings of the operator's tools (finance CLI, demo walk-through, benches).
CLIENT_SETTING_PREFIX = "COALITION_CLIENT"
OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Transport:
    """How one process serves and dials: its CA, certificate and key, or development plaintext."""

    plaintext: bool
    ca_path: str = ""
    certificate_path: str = ""
    key_path: str = ""

    @classmethod
    def from_env(cls, identity: str, setting_prefix: str) -> Transport:
        """Files from `<setting_prefix>_TLS_CERT_PATH`/`_KEY_PATH` and COALITION_TLS_CA_PATH.

        In development, unset files default to the development CA's (created on first use);
        in production each must be set, and a missing one is named.
        """
        if env_choice(DEV_PLAINTEXT_SETTING, "0", ("0", "1")) == "1":
            if not is_development():
                raise ConfigError(
                    f"{DEV_PLAINTEXT_SETTING}=1 serves without TLS and is refused in production; "
                    f"unset it (or set {ENV_SETTING}={DEVELOPMENT} on a development machine)"
                )
            return cls(plaintext=True)
        settings = {
            CA_SETTING: env_str(CA_SETTING, ""),
            f"{setting_prefix}_TLS_CERT_PATH": env_str(f"{setting_prefix}_TLS_CERT_PATH", ""),
            f"{setting_prefix}_TLS_KEY_PATH": env_str(f"{setting_prefix}_TLS_KEY_PATH", ""),
        }
        missing = [name for name, value in settings.items() if not value]
        if len(missing) == len(settings) and is_development():
            return cls.development(identity)
        if missing and not is_development():
            raise ConfigError(
                f"{', '.join(missing)} not set: production ({ENV_SETTING}=production, the default) serves and "
                f"dials mutual TLS only; issue certificates with `coalition-pki` (README: Production)"
            )
        if missing:  # some set, some not: never mix given files with the development CA's
            raise ConfigError(f"{', '.join(missing)} not set: set all of {', '.join(settings)}, or none in development")
        transport = cls(False, *settings.values())
        transport.check_files(list(settings))
        return transport

    @classmethod
    def development(cls, identity: str) -> Transport:
        """The development CA's files for `identity`, made under COALITION_DEV_PKI_DIR on first use."""
        from services import pki

        directory = env_str(DEV_PKI_DIR_SETTING, DEV_PKI_DIR_DEFAULT)
        with _DEVELOPMENT_PKI_LOCK:
            pki.ensure_development_pki(directory)
        return cls(
            False,
            os.path.join(directory, pki.CA_CERT_FILE),
            pki.cert_path(directory, identity),
            pki.key_path(directory, identity),
        )

    def check_files(self, setting_names: list[str]) -> None:
        for name, path in zip(setting_names, (self.ca_path, self.certificate_path, self.key_path), strict=True):
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(f"{name}={path!r}: no readable file there")

    # ---------------------------------------------------------------- serving

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        global _serving_plaintext
        if self.plaintext:
            _serving_plaintext = True
            return server.add_insecure_port(address)
        reloading = _ReloadingCertificate(self)
        credentials = grpc.dynamic_ssl_server_credentials(
            reloading.initial(), reloading.fetch, require_client_authentication=True
        )
        return server.add_secure_port(address, credentials)

    # ---------------------------------------------------------------- dialling

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_path),
            private_key=_read(self.key_path),
            certificate_chain=_read(self.certificate_path),
        )

    def aio_channel(self, address: str, options=(), interceptors=None) -> grpc.aio.Channel:
        if self.plaintext:
            return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
        return grpc.aio.secure_channel(
            address, self.channel_credentials(), options=list(options), interceptors=interceptors
        )

    def channel(self, address: str, options=()) -> grpc.Channel:
        if self.plaintext:
            return grpc.insecure_channel(address, options=list(options))
        return grpc.secure_channel(address, self.channel_credentials(), options=list(options))


def client_transport() -> Transport:
    """The operator's tools (finance CLI, demo walk-through): COALITION_CLIENT_TLS_* or, in development, `operator`."""
    return Transport.from_env(OPERATOR, CLIENT_SETTING_PREFIX)


_DEVELOPMENT_PKI_LOCK = threading.Lock()
# Set once this process serves plaintext (the development switch): only then is a caller
# without a certificate trusted, as the operator. Anywhere else such a caller is nobody.
_serving_plaintext = False


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


class _ReloadingCertificate:
    """Re-reads the server's certificate, key and CA when their files change.

    gRPC asks before every TLS handshake, so a rotated certificate serves new connections at
    once, with no restart; connections already open keep the old one until they end. A set of
    files that does not load (a key caught before its certificate, a CA bundle half written)
    is skipped, and the one already loaded keeps serving.
    """

    def __init__(self, transport: Transport) -> None:
        self._paths = (transport.ca_path, transport.certificate_path, transport.key_path)
        self._lock = threading.Lock()
        self._stamp = self._current_stamp()

    def _current_stamp(self) -> tuple:
        return tuple((stat.st_mtime_ns, stat.st_size) for stat in map(os.stat, self._paths))

    def _read(self) -> grpc.ServerCertificateConfiguration | None:
        ca, certificate, key = (_read(path) for path in self._paths)
        if not _loads(ca, certificate, key):
            return None
        return grpc.ssl_server_certificate_configuration([(key, certificate)], root_certificates=ca)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        configuration = self._read()
        if configuration is None:
            ca, certificate, key = self._paths
            raise ConfigError(f"{certificate} and {key} are not one pair, or {ca} holds no CA certificate")
        return configuration

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            with self._lock:
                stamp = self._current_stamp()
                if stamp == self._stamp:
                    return None
                configuration = self._read()
                if configuration is not None:
                    self._stamp = stamp
                return configuration
        except Exception:  # gRPC calls this before every handshake: never let it fail one
            return None


def _loads(ca_pem: bytes, certificate_pem: bytes, key_pem: bytes) -> bool:
    """The CA bundle parses, and the certificate and key are one pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        x509.load_pem_x509_certificates(ca_pem)
        public = x509.load_pem_x509_certificate(certificate_pem).public_key()
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    encoding, form = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return public.public_bytes(encoding, form) == private.public_key().public_bytes(encoding, form)


def caller_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the caller's certificate; the operator on a development plaintext server."""
    auth = context.auth_context() or {}
    if auth.get("transport_security_type") != [b"ssl"]:
        return OPERATOR if _serving_plaintext else None
    names = auth.get("x509_common_name") or ()
    return names[0].decode(errors="replace") if names else None
