"""The partners domain's shared core: limits, identifiers, checks and errors. Earn rule pricing
lives in pricing.py and conversion arithmetic in converting.py.

Plain Python, no grpc or sqlalchemy. Value is integer minor units; rates are Decimal and
rounded exactly once, explicitly (earn: down per basket; conversion: down per transfer, in
the operator's favour).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Protocol, TypeVar

import orjson

# ---- Limits (one place; the proto documents the same numbers) ----
BASKET_LINES_MAX = 200
LINE_AMOUNT_MAX = 100_000_000  # euro cents
LINE_QUANTITY_MAX = 1_000_000_000  # thousandths of a unit
CATEGORY_LENGTH_MAX = 64
SKU_LENGTH_MAX = 64
RULE_CATEGORIES_MAX = 100
MULTIPLIER_MAX = Decimal(1000)
BASE_RATE_MAX = Decimal(1_000_000)
BONUS_POINTS_MAX = 1_000_000
REDEMPTION_AMOUNT_MAX = 100_000_000
HOLD_TIMEOUT_SECONDS_DEFAULT = 600
HOLD_TIMEOUT_SECONDS_MAX = 3_600
OFFLINE_BATCH_MAX = 500
# An exact retry of IssueApiKey / RotateApiKey within this window shows the same secret again.
API_KEY_RETRY_WINDOW_SECONDS = 600
OFFLINE_AGE_SECONDS_MAX = 30 * 24 * 3600
OFFLINE_FUTURE_SKEW_SECONDS_MAX = 300
QUOTE_TTL_SECONDS = 60
CONVERSION_AMOUNT_MAX = 10**12
# The ledger refuses a transfer above this (services/ledger/limits.py AMOUNT_MAX, minor units):
# no earn and no conversion leg may be priced beyond it, or it could be recorded and never post.
LEDGER_AMOUNT_MAX = 10**15
ALIASES_PER_ENROLMENT_MAX = 10
ALIAS_LENGTH_MAX = 254
DISPLAY_NAME_LENGTH_MAX = 200
PAGE_SIZE_MAX = 500
PAGE_SIZE_DEFAULT = 100
# ListApiKeys shows a key's last characters so an operator can tell keys apart: 4 of a key's
# 43 random characters leave 234 bits unknown.
API_KEY_HINT_LENGTH = 4
ACTIVITY_PAGE_SIZE_DEFAULT = 50
ACTIVITY_PAGE_SIZE_MAX = 200
MICROS_PER_SECOND = 1_000_000

OPERATOR = "operator"
COMMON_CURRENCY = "PTS"
MONEY_CURRENCY = "EUR"
MONEY_SCALE = 2

PARTNER_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
LOCAL_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,64}$")
CURRENCY_CODE_PATTERN = re.compile(r"^[A-Z0-9_]{2,16}$")

# Decimal arithmetic with far more digits than any basket needs, so the only rounding
# is the explicit one.
_EXACT = Context(prec=60)


class DomainError(Exception):
    """A business rule refused the input. `precondition` says whether it depends on state
    (FAILED_PRECONDITION) rather than on the input alone (INVALID_ARGUMENT)."""

    def __init__(self, reason: str, message: str, *, precondition: bool = False, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.precondition = precondition
        self.metadata = metadata


def invalid(reason: str, message: str, **metadata: object) -> DomainError:
    return DomainError(reason, message, **metadata)


def page_limit(page_size: int) -> int:
    """Rows per page of an operator list: 0 means the default, beyond the maximum is refused."""
    if not 0 <= page_size <= PAGE_SIZE_MAX:
        raise invalid("INVALID_PAGE_SIZE", f"page_size must be 0..{PAGE_SIZE_MAX}", field="page_size")
    return page_size or PAGE_SIZE_DEFAULT


def api_key_hint(api_key: str) -> str:
    return api_key[-API_KEY_HINT_LENGTH:]


# ---- Identifiers ----
def check_partner_id(value: str, name: str = "partner_id") -> str:
    if not PARTNER_ID_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_PARTNER_ID", f"{name} must be 1..32 characters of a-z 0-9 and -", field=name)
    return value


def check_local_id(value: str, name: str) -> str:
    if not LOCAL_ID_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_ID", f"{name} must be 1..64 characters of A-Z a-z 0-9 and ._-", field=name, value=value)
    return value


def check_request_id(value: str, name: str = "request_id") -> str:
    if not REQUEST_ID_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_REQUEST_ID", f"{name} must be 1..64 characters of A-Z a-z 0-9 and ._:-/@", field=name)
    return value


def check_currency_code(value: str, name: str = "currency_code") -> str:
    if not CURRENCY_CODE_PATTERN.fullmatch(value or ""):
        raise invalid("INVALID_CURRENCY_CODE", f"{name} must be 2..16 characters of A-Z 0-9 _", field=name)
    return value


def check_display_name(value: str) -> str:
    if not value or len(value) > DISPLAY_NAME_LENGTH_MAX:
        raise invalid("INVALID_DISPLAY_NAME", "display_name must be 1..200 characters", field="display_name")
    return value


def parse_decimal(text: str, name: str, *, minimum: Decimal, maximum: Decimal) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        raise invalid("INVALID_DECIMAL", f"{name} must be a decimal string like '1.5'", field=name) from None
    if not value.is_finite() or value < minimum or value > maximum:
        raise invalid("INVALID_DECIMAL", f"{name} must be between {minimum} and {maximum}", field=name, value=text)
    return value


# ---- Ledger account and transfer ids (conventions shared with settlement) ----
def wallet_account_id(currency: str, member_id: str) -> str:
    return f"wallet:{currency}:{member_id}"


def issuance_account_id(currency: str, partner_id: str) -> str:
    return f"issuance:{currency}:{partner_id}"


def redemption_account_id(currency: str, partner_id: str) -> str:
    return f"redemption:{currency}:{partner_id}"


def exchange_account_id(currency: str, other_currency: str) -> str:
    return f"exchange:{currency}:{other_currency}"


def breakage_account_id(currency: str) -> str:
    return f"breakage:{currency}"


def earn_transfer_id(partner_id: str, request_id: str) -> str:
    return f"earn:{partner_id}:{request_id}"


def hold_transfer_id(partner_id: str, request_id: str) -> str:
    return f"redeem:{partner_id}:{request_id}"


def capture_transfer_id(partner_id: str, request_id: str) -> str:
    return f"redeem-capture:{partner_id}:{request_id}"


def void_transfer_id(partner_id: str, request_id: str) -> str:
    return f"redeem-void:{partner_id}:{request_id}"


def return_transfer_id(partner_id: str, request_id: str, attempt: int, leg: str) -> str:
    # The attempt number lets a return that lost a race for the member's points be
    # recomputed under a fresh ledger id (the ledger keeps failed ids forever).
    return f"return:{partner_id}:{request_id}:{attempt}:{leg}"


def conversion_id_for(caller_id: str, request_id: str) -> str:
    return f"convert:{caller_id}:{request_id}"


# ---- Members and aliases ----
ALIAS_KINDS = ("card", "phone", "email")
_PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_alias(kind: str, value: str) -> str:
    """Canonical form, so '4000 1234' and '40001234' are the same card."""
    if not value or len(value) > ALIAS_LENGTH_MAX:
        raise invalid("INVALID_ALIAS", "alias value must be 1..254 characters", field="alias.value")
    if kind == "card":
        digits = re.sub(r"[\s-]", "", value)
        if not digits.isdigit() or not 6 <= len(digits) <= 32:
            raise invalid("INVALID_ALIAS", "a card number is 6..32 digits", field="alias.value")
        return digits
    if kind == "phone":
        phone = re.sub(r"[\s()-]", "", value)
        if not _PHONE_PATTERN.fullmatch(phone):
            raise invalid("INVALID_ALIAS", "a phone number must be E.164, e.g. +491701234567", field="alias.value")
        return phone
    if kind == "email":
        email = value.strip().lower()
        if not _EMAIL_PATTERN.fullmatch(email):
            raise invalid("INVALID_ALIAS", "not an e-mail address", field="alias.value")
        return email
    raise invalid("INVALID_ALIAS", "alias kind must be CARD, PHONE or EMAIL", field="alias.kind")


def alias_hash(secret: bytes, kind: str, value: str) -> str:
    """Keyed hash (HMAC-SHA256): a stolen table cannot be reversed by hashing phone numbers."""
    canonical = normalize_alias(kind, value)
    return hmac.new(secret, f"{kind}:{canonical}".encode(), hashlib.sha256).hexdigest()


# ---- Rule versions ----
def select_version(rules: Sequence[RuleT], at_micros: int) -> RuleT | None:
    """The highest version in effect at the time."""
    best = None
    for rule in rules:
        if rule.in_effect(at_micros) and (best is None or rule.version > best.version):
            best = rule
    return best


class _Versioned(Protocol):
    version: int

    def in_effect(self, at_micros: int) -> bool: ...


RuleT = TypeVar("RuleT", bound=_Versioned)


def fingerprint(**content: object) -> str:
    """Digest of a request's content: a repeated request_id must carry the same content.

    What is digested is the content's JSON as `json.dumps(sort_keys=True, separators=(",", ":"),
    default=str)` writes it, which digests stored by earlier versions were made of. orjson
    writes the very same text, ten times faster, for str, int, bool and None, in lists, tuples
    and dicts, whenever no character needs escaping (json.dumps escapes every character outside
    printable ASCII, orjson fewer); otherwise json.dumps writes it. The content must be of those
    types only: orjson writes a float or a plain Enum its own way, and the digest would change."""
    try:
        canonical = orjson.dumps(content, option=_FINGERPRINT_ORJSON)
    except TypeError:
        canonical = None
    if canonical is None or b"\\" in canonical or b"\x7f" in canonical or not canonical.isascii():
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(canonical).hexdigest()


# Types orjson would write its own way (dates, dataclasses, subclasses of str and int) raise
# instead, and fingerprint uses json.dumps for them.
_FINGERPRINT_ORJSON = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
