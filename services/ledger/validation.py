"""Request shape checks: proto in, domain commands out, or INVALID_ARGUMENT naming the item and field.

A batch with any malformed item is refused as a whole, before anything is read or written.
"""

from __future__ import annotations

import re

from coalition.ledger.v1 import ledger_pb2
from services.common.errors import InvalidArgument
from services.common.validation import ID_PATTERN
from services.ledger import limits, lots
from services.ledger.model import Account, Code, Kind, Side, TransferCommand

# The one id grammar of every service (services/common/validation.py), full-matched.
_ID = ID_PATTERN
_CURRENCY = re.compile(rf"[A-Z0-9_]{{2,{limits.CURRENCY_CODE_LENGTH_MAX}}}")
TIMESTAMP_SECONDS_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
_REQUEST_KINDS = {Kind.POSTED, Kind.PENDING, Kind.POST_PENDING, Kind.VOID_PENDING}
_CODES = {code.value for code in Code}


def _invalid(reason: str, message: str, **where: object) -> InvalidArgument:
    return InvalidArgument(reason, message, **where)


def check_id(value: str, field: str, **where: object) -> str:
    if not _ID.fullmatch(value):
        raise _invalid(
            "INVALID_ID",
            f"{field} must be 1..{limits.ID_LENGTH_MAX} characters of A-Z a-z 0-9 . _ : - / @, got {value!r}",
            field=field,
            **where,
        )
    return value


def check_currency_code(value: str, field: str = "currency_code", **where: object) -> str:
    if not _CURRENCY.fullmatch(value):
        raise _invalid(
            "INVALID_CURRENCY_CODE",
            f"{field} must be 2..{limits.CURRENCY_CODE_LENGTH_MAX} characters of A-Z 0-9 _, got {value!r}",
            field=field,
            **where,
        )
    return value


def check_length(value: str, field: str, length_max: int, **where: object) -> str:
    """Free text: bounded, and printable (no NUL or control characters, which PostgreSQL or logs cannot take)."""
    if len(value) > length_max:
        raise _invalid(
            "VALUE_TOO_LONG", f"{field} is {len(value)} characters; at most {length_max} allowed", field=field, **where
        )
    if not value.isprintable():
        raise _invalid("VALUE_NOT_PRINTABLE", f"{field} contains control characters", field=field, **where)
    return value


def check_timestamp(timestamp, field: str) -> int:
    """A google.protobuf.Timestamp within its documented range, as microseconds."""
    if not (
        TIMESTAMP_SECONDS_MIN <= timestamp.seconds <= TIMESTAMP_SECONDS_MAX and 0 <= timestamp.nanos <= 999_999_999
    ):
        raise _invalid("INVALID_TIMESTAMP", f"{field} must be between 0001-01-01 and 9999-12-31 UTC", field=field)
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


def check_batch_size(count: int, what: str) -> None:
    if count == 0:
        raise _invalid("EMPTY_BATCH", f"send at least one {what}")
    if count > limits.BATCH_ITEMS_MAX:
        raise _invalid(
            "BATCH_TOO_LARGE",
            f"{count} {what}s in one call; at most {limits.BATCH_ITEMS_MAX} allowed, split the batch",
            count=count,
            limit=limits.BATCH_ITEMS_MAX,
        )


def check_lookup_size(count: int, field: str) -> None:
    if count == 0 or count > limits.LOOKUP_IDS_MAX:
        raise _invalid(
            "INVALID_LOOKUP_SIZE", f"{field} must hold 1..{limits.LOOKUP_IDS_MAX} ids, got {count}", field=field
        )


def page_size(requested: int) -> int:
    if requested < 0 or requested > limits.PAGE_SIZE_MAX:
        raise _invalid("INVALID_PAGE_SIZE", f"page_size must be 0..{limits.PAGE_SIZE_MAX}, got {requested}")
    return requested or limits.PAGE_SIZE_DEFAULT


def currency_from_proto(currency: ledger_pb2.Currency) -> tuple[str, int, str]:
    check_currency_code(currency.code, "currency.code")
    if not 0 <= currency.scale <= limits.CURRENCY_SCALE_MAX:
        raise _invalid(
            "INVALID_SCALE", f"currency.scale must be 0..{limits.CURRENCY_SCALE_MAX}", field="currency.scale"
        )
    if not currency.owner_id:
        raise _invalid("MISSING_FIELD", "currency.owner_id is required", field="currency.owner_id")
    check_length(currency.owner_id, "currency.owner_id", limits.OWNER_ID_LENGTH_MAX)
    return currency.code, currency.scale, currency.owner_id


def account_from_proto(account: ledger_pb2.Account, index: int) -> Account:
    check_id(account.id, "id", index=index)
    check_currency_code(account.currency_code, "currency_code", index=index)
    if account.normal_side not in (Side.DEBIT, Side.CREDIT):
        raise _invalid(
            "INVALID_ENUM_VALUE",
            "normal_side must be ACCOUNT_SIDE_DEBIT or ACCOUNT_SIDE_CREDIT",
            field="normal_side",
            index=index,
        )
    check_length(account.owner_id, "owner_id", limits.OWNER_ID_LENGTH_MAX, index=index)
    check_length(account.kind, "kind", limits.ACCOUNT_KIND_LENGTH_MAX, index=index)
    return Account(
        id=account.id,
        currency_code=account.currency_code,
        normal_side=Side(account.normal_side),
        no_overdraft=account.no_overdraft,
        owner_id=account.owner_id,
        kind=account.kind,
    )


def transfer_from_proto(item: ledger_pb2.TransferInput, index: int) -> TransferCommand:
    check_id(item.id, "id", index=index)
    if item.kind not in _REQUEST_KINDS:
        raise _invalid(
            "INVALID_ENUM_VALUE",
            "kind must be TRANSFER_KIND_POSTED, _PENDING, _POST_PENDING or _VOID_PENDING",
            field="kind",
            index=index,
        )
    kind = Kind(item.kind)
    resolves = kind in (Kind.POST_PENDING, Kind.VOID_PENDING)
    if item.code and item.code not in _CODES:
        raise _invalid("INVALID_ENUM_VALUE", f"code {item.code} is not a TransferCode", field="code", index=index)
    if not item.code and not resolves:
        raise _invalid("MISSING_FIELD", "code is required", field="code", index=index)
    for field in ("debit_account_id", "credit_account_id"):
        value = getattr(item, field)
        if value or not resolves:
            check_id(value, field, index=index)
    if item.currency_code or not resolves:
        check_currency_code(item.currency_code, index=index)
    _check_amount(item, kind, index)
    _check_kind_fields(item, kind, index)
    metadata = item.metadata
    for field in ("partner_id", "store_id", "terminal_id", "receipt_id", "member_id"):
        check_length(getattr(metadata, field), f"metadata.{field}", limits.METADATA_LENGTH_MAX, index=index)
    if not 0 <= metadata.tier_bonus_points <= item.amount:
        raise _invalid(
            "INVALID_TIER_BONUS_POINTS",
            f"metadata.tier_bonus_points must be 0..amount ({item.amount}), got {metadata.tier_bonus_points}",
            field="metadata.tier_bonus_points",
            index=index,
        )
    return TransferCommand(
        id=item.id,
        debit_account_id=item.debit_account_id,
        credit_account_id=item.credit_account_id,
        amount=item.amount,
        currency_code=item.currency_code,
        kind=kind,
        pending_id=item.pending_id,
        timeout_seconds=item.timeout_seconds,
        reverses_transfer_id=item.reverses_transfer_id,
        code=item.code,
        partner_id=metadata.partner_id,
        store_id=metadata.store_id,
        terminal_id=metadata.terminal_id,
        receipt_id=metadata.receipt_id,
        member_id=metadata.member_id,
        tier_bonus_points=metadata.tier_bonus_points,
        linked=item.linked,
    )


def _check_amount(item: ledger_pb2.TransferInput, kind: Kind, index: int) -> None:
    if kind is Kind.VOID_PENDING:
        if item.amount != 0:
            raise _invalid("INVALID_AMOUNT", "amount must be 0 for VOID_PENDING", field="amount", index=index)
        return
    if not 0 < item.amount <= limits.AMOUNT_MAX:
        raise _invalid(
            "INVALID_AMOUNT",
            f"amount must be 1..{limits.AMOUNT_MAX} minor units, got {item.amount}",
            field="amount",
            index=index,
        )


_EXPIRY_ID = re.compile(r"#expiry:[0-9a-f]{48}")


def _check_kind_fields(item: ledger_pb2.TransferInput, kind: Kind, index: int) -> None:
    if kind in (Kind.POST_PENDING, Kind.VOID_PENDING):
        check_id(item.pending_id, "pending_id", index=index)
    elif item.pending_id:
        raise _invalid(
            "UNEXPECTED_FIELD", "pending_id is only for POST_PENDING and VOID_PENDING", field="pending_id", index=index
        )
    if kind is Kind.PENDING:
        if not 0 < item.timeout_seconds <= limits.HOLD_TIMEOUT_SECONDS_MAX:
            raise _invalid(
                "INVALID_TIMEOUT",
                f"timeout_seconds must be 1..{limits.HOLD_TIMEOUT_SECONDS_MAX} for a PENDING transfer",
                field="timeout_seconds",
                index=index,
            )
    elif item.timeout_seconds:
        raise _invalid(
            "UNEXPECTED_FIELD", "timeout_seconds is only for PENDING transfers", field="timeout_seconds", index=index
        )
    if item.reverses_transfer_id:
        # The ledger's own EXPIRY transfers (ids "#expiry:<hex>") may be reversed: a reinstatement.
        reversed_id = item.reverses_transfer_id
        if not _EXPIRY_ID.fullmatch(reversed_id):
            check_id(reversed_id, "reverses_transfer_id", index=index)
        if kind is not Kind.POSTED:
            raise _invalid(
                "UNEXPECTED_FIELD", "a reversal must be a POSTED transfer", field="reverses_transfer_id", index=index
            )


def expiry_policy_from_proto(message) -> tuple[lots.ExpiryPolicy, bool]:
    """A policy version and whether its effective_time was given (unset: now)."""
    check_currency_code(message.currency_code, "policy.currency_code")
    if message.kind not in (int(kind) for kind in lots.PolicyKind):
        raise _invalid("INVALID_ENUM_VALUE", "policy.kind must be NONE, FIXED or INACTIVITY", field="policy.kind")
    kind = lots.PolicyKind(message.kind)
    expiring = kind is not lots.PolicyKind.NONE
    if expiring and not 1 <= message.months <= lots.MONTHS_MAX:
        raise _invalid("INVALID_MONTHS", f"policy.months must be 1..{lots.MONTHS_MAX}", field="policy.months")
    if not expiring and message.months:
        raise _invalid("INVALID_MONTHS", "policy.months must be 0 for NONE", field="policy.months")
    sweep = (message.sweep_month, message.sweep_day)
    if sweep != (0, 0) and (kind is not lots.PolicyKind.FIXED or not (1 <= sweep[0] <= 12 and 1 <= sweep[1] <= 31)):
        raise _invalid(
            "INVALID_SWEEP_DAY",
            "policy.sweep_month (1..12) and sweep_day (1..31) are for FIXED only; 0 and 0 for none",
            field="policy.sweep_month",
        )
    if not 0 <= message.notice_days <= 365:
        raise _invalid("INVALID_NOTICE_DAYS", "policy.notice_days must be 0..365 (0: 30)", field="policy.notice_days")
    given = message.HasField("effective_time")
    effective_us = check_timestamp(message.effective_time, "policy.effective_time") if given else 0
    policy = lots.ExpiryPolicy(
        currency_code=message.currency_code,
        effective_from_us=effective_us,
        kind=kind,
        months=message.months,
        sweep_month=message.sweep_month,
        sweep_day=message.sweep_day,
        notice_days=message.notice_days or lots.NOTICE_DAYS_DEFAULT,
    )
    return policy, given
