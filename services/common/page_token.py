"""The one page-token codec of the three services.

A token is base64url of a JSON array of a fixed shape (strings and int64s) that only this codec
writes. Decoding bounds the size before parsing (no nesting bomb reaches the JSON parser's
recursion) and checks the shape, so any token a service did not write is INVALID_ARGUMENT
INVALID_PAGE_TOKEN, never an internal error.
"""

from __future__ import annotations

import base64
import binascii
import json

from services.common.errors import InvalidArgument
from services.common.validation import is_printable

TOKEN_LENGTH_MAX = 1_024
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_STRING_LENGTH_MAX = 256


def _bad_token() -> InvalidArgument:
    return InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this service returned; start again without it")


def encode_page_token(*values: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode()).decode()


def decode_page_token(token: str, *kinds: type) -> tuple | None:
    """The values of a token written by encode_page_token with values of `kinds`; None for no token."""
    if not token:
        return None
    if len(token) > TOKEN_LENGTH_MAX:
        raise _bad_token()
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise _bad_token() from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise _bad_token()
    for value, kind in zip(values, kinds, strict=True):
        if not _is_kind(value, kind):
            raise _bad_token()
    return tuple(values)


def _is_kind(value: object, kind: type) -> bool:
    if kind is int:
        return type(value) is int and _INT64_MIN <= value <= _INT64_MAX
    if kind is str:
        return type(value) is str and 0 < len(value) <= _STRING_LENGTH_MAX and is_printable(value) and value.isascii()
    raise TypeError(f"page tokens hold str and int, not {kind.__name__}")
