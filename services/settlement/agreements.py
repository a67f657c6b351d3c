"""Use cases on price agreements: record a version, list versions."""

from __future__ import annotations

import re

from sqlalchemy import exc as sa_exc

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from services.settlement import store
from services.settlement.context import SettlementContext
from services.settlement.model import PriceAgreement

ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@-]{1,128}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z0-9_]{2,16}$")
PRICES_PER_AGREEMENT_MAX = 1_000


def validate_agreement(agreement: PriceAgreement) -> None:
    if not ID_PATTERN.fullmatch(agreement.agreement_id):
        raise InvalidArgument("INVALID_AGREEMENT_ID", "agreement_id must be 1..128 characters of A-Z a-z 0-9 ._:/@-")
    if not 1 <= len(agreement.partner_id) <= 128:
        raise InvalidArgument("INVALID_PARTNER_ID", "partner_id must be 1..128 characters")
    if len(agreement.point_prices) + len(agreement.conversion_prices) > PRICES_PER_AGREEMENT_MAX:
        raise InvalidArgument("TOO_MANY_PRICES", f"at most {PRICES_PER_AGREEMENT_MAX} prices per agreement")
    codes = [p.currency_code for p in agreement.point_prices]
    directions = [(p.from_currency_code, p.to_currency_code) for p in agreement.conversion_prices]
    for code in codes + [c for pair in directions for c in pair]:
        if not CURRENCY_PATTERN.fullmatch(code):
            raise InvalidArgument("INVALID_CURRENCY_CODE", f"currency code {code!r} is not 2..16 of A-Z 0-9 _")
    if len(set(codes)) != len(codes) or len(set(directions)) != len(directions):
        raise InvalidArgument("DUPLICATE_PRICE", "each currency and each conversion direction may be priced once")


async def set_price_agreement(
    context: SettlementContext, agreement: PriceAgreement
) -> tuple[PriceAgreement, int, bool]:
    """Store a version; returns (agreement, create_time_us, created)."""
    validate_agreement(agreement)

    def work(connection):
        # Under the lock a close freezing a period holds: it sees every period frozen before it.
        store.lock_agreements_and_periods(connection)
        existing = store.get_agreement(connection, agreement.agreement_id)
        if existing is not None:
            if existing[0].content_key() != agreement.content_key():
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    f"agreement {agreement.agreement_id} exists with different content; agreements are"
                    " immutable, record a new version with a new id",
                    agreement_id=agreement.agreement_id,
                )
            return existing[0], existing[1], False
        other = store.agreement_at_start(connection, agreement.partner_id, agreement.valid_from_us)
        if other is not None:
            raise AlreadyExists(
                "AGREEMENT_START_TAKEN",
                f"partner {agreement.partner_id} already has version {other} starting at that time",
                agreement_id=other,
            )
        closed = store.period_containing(connection, agreement.valid_from_us)
        last = store.last_period_row(connection)
        if closed is not None or (last is not None and agreement.valid_from_us < last.end_us):
            raise FailedPrecondition(
                "PERIOD_ALREADY_CLOSED",
                "a version may not start inside or before a closed period (it would reprice a closed"
                " statement); start it at or after the end of the last closed period",
                last_closed_end_us=last.end_us if last is not None else 0,
            )
        now_us = context.now_us()
        store.insert_agreement(connection, agreement, now_us)
        return agreement, now_us, True

    try:
        return await context.write(work)
    except sa_exc.IntegrityError:
        # A concurrent identical call won; answer as the idempotent repeat it is.
        return await context.write(work)


async def list_price_agreements(context: SettlementContext, partner_id: str, after: tuple[str, int] | None, limit: int):
    return await context.read(lambda c: store.list_agreements(c, partner_id, after, limit))
