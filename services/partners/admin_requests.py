"""Idempotency of the operator's mutations that create something under a server-assigned
id (earn and conversion rule versions, API keys): the request's content is remembered
with what it created, so a retry returns that instead of creating it again.

An API key is shown once. To make a retry after a lost response safe, the new key's
secret is kept sealed (XOR with an HMAC-SHA512 pad keyed by a server secret and bound to
the key id, so each pad seals one secret only) for API_KEY_RETRY_WINDOW_SECONDS, then
forgotten. The database alone never reveals a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from sqlalchemy import Row

from services.common.errors import AlreadyExists

CREATE_EARN_RULE = "create_earn_rule"
CREATE_CONVERSION_RULE = "create_conversion_rule"
ISSUE_API_KEY = "issue_api_key"
ROTATE_API_KEY = "rotate_api_key"

_SEAL_LABEL = b"coalition.partners.api-key-retry\x00"
SEALED_SECRET_BYTES_MAX = hashlib.sha512().digest_size


def content_json(content: dict[str, object]) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)


def check_same_content(row: Row, content: dict[str, object], request_id: str) -> None:
    """ALREADY_EXISTS naming the first field (in name order) the retry changed."""
    first, now = json.loads(row.content), json.loads(content_json(content))
    for field in sorted(set(first) | set(now)):
        if first.get(field) != now.get(field):
            raise AlreadyExists(
                "ID_REUSED_WITH_DIFFERENT_CONTENT",
                f"this request_id was used with another {field}; use a new request_id",
                request_id=request_id,
                field=field,
            )


def _pad(server_secret: bytes, key_id: str) -> bytes:
    return hmac.new(server_secret, _SEAL_LABEL + key_id.encode(), hashlib.sha512).digest()


def seal(server_secret: bytes, key_id: str, api_key: str) -> str:
    data = api_key.encode()
    if len(data) > SEALED_SECRET_BYTES_MAX:
        raise ValueError("API key longer than the sealing pad")
    return bytes(a ^ b for a, b in zip(data, _pad(server_secret, key_id), strict=False)).hex()


def unseal(server_secret: bytes, key_id: str, sealed: str) -> str | None:
    data = bytes(a ^ b for a, b in zip(bytes.fromhex(sealed), _pad(server_secret, key_id), strict=False))
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None  # the server secret changed since: the caller gets the window-passed answer
