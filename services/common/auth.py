"""Authentication shared by the services: bearer keys from gRPC metadata, hashed at rest.

API keys are high-entropy random tokens shown once, so a plain SHA-256 is the right
hash (no salt or slow KDF needed: there is nothing to brute-force). The operator's admin
key comes from configuration and is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import grpc

from services.common import logs
from services.common.errors import PermissionDenied, Unauthenticated
from services.common.tls import OPERATOR, caller_identity

AUTHORIZATION_HEADER = "authorization"
BEARER_PREFIX = "bearer "
API_KEY_BYTES = 32
API_KEY_LENGTH_MAX = 256
# Documented development default; a server started with it logs a warning.
DEV_ADMIN_API_KEY = "coalition-dev-admin-key"


def new_api_key(prefix: str = "cpk") -> str:
    """A fresh random key such as `cpk_3q...`; return it to the caller once, store only its hash."""
    return f"{prefix}_{secrets.token_urlsafe(API_KEY_BYTES)}"


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    """The key of `authorization: Bearer <key>`, or None when absent or malformed."""
    for key, value in context.invocation_metadata() or ():
        if key != AUTHORIZATION_HEADER or not isinstance(value, str):
            continue
        if len(value) > API_KEY_LENGTH_MAX + len(BEARER_PREFIX) or not value.lower().startswith(BEARER_PREFIX):
            return None
        token = value[len(BEARER_PREFIX) :].strip()
        return token or None
    return None


def require_bearer_token(context: grpc.aio.ServicerContext) -> str:
    token = bearer_token(context)
    if token is None:
        raise Unauthenticated("MISSING_CREDENTIALS", "send your API key as metadata `authorization: Bearer <key>`")
    return token


class AdminKey:
    """The operator's credential. Compares digests so timing reveals nothing about the key."""

    def __init__(self, admin_api_key: str) -> None:
        if not admin_api_key:
            raise ValueError("the admin API key must not be empty")
        self._digest = hashlib.sha256(admin_api_key.encode()).digest()
        self.is_dev_default = admin_api_key == DEV_ADMIN_API_KEY

    def matches(self, token: str | None) -> bool:
        if token is None:
            return False
        return hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest)

    def require(self, context: grpc.aio.ServicerContext) -> None:
        """Raise unless the call carries the admin key (UNAUTHENTICATED when no key at all)
        over a connection with the operator's certificate."""
        token = require_bearer_token(context)
        if not self.matches(token):
            raise PermissionDenied("ADMIN_REQUIRED", "this call needs the operator's admin key")
        require_operator_certificate(context)
        bind_principal(OPERATOR)


def require_operator_certificate(context: grpc.aio.ServicerContext) -> None:
    """The admin key alone is not enough: it must come with the operator's client certificate."""
    identity = caller_identity(context)
    if identity != OPERATOR:
        raise PermissionDenied(
            "OPERATOR_CERTIFICATE_REQUIRED",
            f"admin calls need the operator's client certificate; this connection presents {identity!r}",
            caller=identity or "",
        )


def bind_principal(partner_id: str) -> None:
    """Every later log line of this request carries the caller."""
    logs.bind(partner_id=partner_id)
