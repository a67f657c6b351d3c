"""Conversion use cases: quote (fixed for a short time), execute once, history.

Executing moves wallet(A) -> exchange:A:B and exchange:B:A -> wallet(B) as two linked
ledger transfers, so both happen or neither does.
"""

from __future__ import annotations

import secrets

import structlog
from sqlalchemy import Connection, Row

from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.common.ledger_client import (
    Failure,
    LedgerRefused,
    TransferInput,
    TransferMetadata,
    failure_name,
    ledger_pb2,
    succeeded,
)
from services.partners import converting, model, recording
from services.partners.access import Caller, require_active
from services.partners.app import App
from services.partners.members import MemberRef, ensure_wallet, resolve_member
from services.partners.partners_admin import currency_owner
from services.partners.shortfall import InsufficientPoints, with_available
from services.partners.store import conversions as conversion_store
from services.partners.store import members as member_store
from services.partners.store import rules as rule_store

_log = structlog.get_logger("partners")


def _check_caller(caller: Caller, from_currency: str, to_currency: str) -> None:
    """The operator converts anything; a partner only into or out of its own programme."""
    if caller.is_admin:
        return
    require_active(caller)
    if not caller.programme_currency or caller.programme_currency not in (from_currency, to_currency):
        raise PermissionDenied(
            "CONVERSION_NOT_OWNED", "a partner may only convert into or out of its own programme currency"
        )


def _rule_version(connection: Connection, app: App, from_currency: str, to_currency: str, version: int | None, at: int):
    pair = (from_currency, to_currency)
    rules = app.facts.conversion_rules.get_or_load(
        pair, lambda: rule_store.conversion_rules_of(connection, from_currency, to_currency)
    )
    if version is not None:
        # A quote's version: versions never change, but one newer than this process has seen is read.
        found = next((rule for rule in rules if rule.version == version), None)
        if found is None:
            rules = rule_store.conversion_rules_of(connection, from_currency, to_currency)
            found = next(rule for rule in rules if rule.version == version)
        return found
    rule = model.select_version(rules, at)
    if rule is None:
        raise FailedPrecondition(
            "NO_CONVERSION_RULE",
            f"no conversion from {from_currency} to {to_currency} is offered now",
            from_currency=from_currency,
            to_currency=to_currency,
        )
    return rule


def _converted_this_year(connection: Connection, member_id: str, rule: converting.ConversionRule, at: int) -> int:
    start, end = converting.utc_year_bounds(at)
    return conversion_store.converted_in_window(connection, member_id, rule.from_currency, rule.to_currency, start, end)


async def quote(app: App, caller: Caller, member: MemberRef, from_currency: str, to_currency: str, amount: int) -> Row:
    model.check_currency_code(from_currency, "from_currency_code")
    model.check_currency_code(to_currency, "to_currency_code")
    _check_caller(caller, from_currency, to_currency)
    now = app.clock()
    quote_id = f"q-{secrets.token_hex(12)}"

    def work(connection: Connection) -> Row:
        member_row = resolve_member(connection, app, member)
        rule = _rule_version(connection, app, from_currency, to_currency, None, now)
        try:
            outcome = converting.convert(
                rule, amount, _converted_this_year(connection, member_row.member_id, rule, now)
            )
        except model.DomainError as error:
            raise recording.as_service_error(error) from None
        conversion_store.insert_quote(
            connection,
            quote_id=quote_id,
            caller_id=caller.partner_id,
            member_id=member_row.member_id,
            from_currency=from_currency,
            to_currency=to_currency,
            from_amount=amount,
            base_to_amount=outcome.base_to_amount,
            bonus_to_amount=outcome.bonus_to_amount,
            rounded_down_to_amount=str(outcome.rounded_down_to_amount),
            rule_version=rule.version,
            from_units=rule.from_units,
            to_units=rule.to_units,
            annual_remaining_from_amount=outcome.annual_remaining_from_amount,
            expire_time_us=converting.quote_expire_micros(now),
            create_time_us=now,
        )
        return conversion_store.get_quote(connection, quote_id)

    return await app.write(work)


async def execute(app: App, caller: Caller, request_id: str, quote_id: str) -> tuple[Row, Row]:
    """Executes a quote at its quoted outcome, even if a new rule version started since: a
    quote fixes the outcome for its lifetime. The annual cap is checked again, under a lock
    on the member, because other conversions may have happened meanwhile."""
    model.check_request_id(request_id)
    if not quote_id:
        raise InvalidArgument("QUOTE_REQUIRED", "quote_id is required")
    now = app.clock()
    conversion_id = model.conversion_id_for(caller.partner_id, request_id)

    def record(connection: Connection) -> tuple[Row, Row]:
        quote_row = conversion_store.get_quote(connection, quote_id)
        if quote_row is None or quote_row.caller_id != caller.partner_id:
            raise NotFound("QUOTE_NOT_FOUND", "no quote with this id", quote_id=quote_id)
        existing = conversion_store.conversion_by_request(connection, caller.partner_id, request_id)
        if existing is not None:
            if existing.quote_id != quote_id:
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    "this request_id executed another quote",
                    request_id=request_id,
                )
            return existing, quote_row
        _check_caller(caller, quote_row.from_currency, quote_row.to_currency)
        used = conversion_store.conversion_by_quote(connection, quote_id)
        if used is not None:
            if used.caller_id == caller.partner_id and used.request_id == request_id:
                # This very request, committed between the two reads above (a retry racing its
                # first send under READ COMMITTED): the retry answers as the first.
                return used, quote_row
            raise FailedPrecondition("QUOTE_ALREADY_USED", "the quote was executed already; ask for a new quote")
        if converting.quote_expired(quote_row.expire_time_us, now):
            raise FailedPrecondition("QUOTE_EXPIRED", "the quote expired; ask for a new quote", quote_id=quote_id)
        member_store.lock_member(connection, quote_row.member_id)
        rule = _rule_version(
            connection, app, quote_row.from_currency, quote_row.to_currency, quote_row.rule_version, now
        )
        if rule.annual_cap_from_amount:
            converted = _converted_this_year(connection, quote_row.member_id, rule, now)
            if converted + quote_row.from_amount > rule.annual_cap_from_amount:
                raise FailedPrecondition(
                    "ANNUAL_CAP_EXCEEDED",
                    "the member reached the yearly conversion cap",
                    annual_cap_from_amount=rule.annual_cap_from_amount,
                    converted_this_year=converted,
                )
        conversion_store.insert_conversion(
            connection,
            conversion_id=conversion_id,
            caller_id=caller.partner_id,
            request_id=request_id,
            quote_id=quote_id,
            member_id=quote_row.member_id,
            from_currency=quote_row.from_currency,
            to_currency=quote_row.to_currency,
            from_amount=quote_row.from_amount,
            to_amount=quote_row.base_to_amount + quote_row.bonus_to_amount,
            state="pending",
            create_time_us=now,
        )
        return conversion_store.conversion_by_request(connection, caller.partner_id, request_id), quote_row

    conversion, quote_row = await app.write(record, retry_unique_violation=True)
    conversion = await _complete(app, conversion)
    if conversion.state == "failed":
        raise await with_available(app, _failed(conversion)) from None
    return conversion, quote_row


async def _complete(app: App, conversion: Row) -> Row:
    """Send a recorded conversion's two linked legs and record the outcome. The client's call,
    its retries and the server's recovery pass all come here with the same transfer ids, so
    the ledger applies them at most once and every caller records the same outcome. The quote
    is not checked again: it was valid when the execution was recorded, and the recorded
    execution is what completes. Returns the conversion completed or failed."""
    if conversion.state != "pending":
        return conversion
    from_wallet = await ensure_wallet(app, conversion.member_id, conversion.from_currency)
    to_wallet = await ensure_wallet(app, conversion.member_id, conversion.to_currency)
    owners = await app.read(
        lambda connection: (
            currency_owner(connection, conversion.from_currency),
            currency_owner(connection, conversion.to_currency),
        )
    )

    def metadata(owner: str | None) -> TransferMetadata:
        return TransferMetadata(
            partner_id=owner or model.OPERATOR,
            receipt_id=conversion.conversion_id,
            member_id=conversion.member_id,
        )

    transfers = [
        TransferInput(
            id=f"{conversion.conversion_id}:out",
            debit_account_id=from_wallet,
            credit_account_id=model.exchange_account_id(conversion.from_currency, conversion.to_currency),
            amount=conversion.from_amount,
            currency_code=conversion.from_currency,
            kind=ledger_pb2.TRANSFER_KIND_POSTED,
            code=ledger_pb2.TRANSFER_CODE_CONVERSION,
            metadata=metadata(owners[0]),
            linked=True,
        ),
        TransferInput(
            id=f"{conversion.conversion_id}:in",
            debit_account_id=model.exchange_account_id(conversion.to_currency, conversion.from_currency),
            credit_account_id=to_wallet,
            amount=conversion.to_amount,
            currency_code=conversion.to_currency,
            kind=ledger_pb2.TRANSFER_KIND_POSTED,
            code=ledger_pb2.TRANSFER_CODE_CONVERSION,
            metadata=metadata(owners[1]),
        ),
    ]
    try:
        results = await app.ledger.create_transfers(transfers)
    except LedgerRefused as error:
        if not error.invalid_argument:
            raise
        # The ledger refused the legs' content (recorded before conversions were bounded): final.
        _log.error("conversion_invalid", conversion_id=conversion.conversion_id, message=str(error))
        results = None
    if results is None:
        state, reason = "failed", recording.LEDGER_INVALID_ARGUMENT
    elif all(succeeded(result) for result in results):
        state, reason = "completed", None
    else:
        root = next(r for r in results if r.failure_reason != Failure.FAILURE_REASON_LINKED_EVENT_FAILED)
        state, reason = "failed", failure_name(root)

    def finish(connection: Connection) -> Row:
        conversion_store.finish_conversion(connection, conversion.conversion_id, state, reason)
        return conversion_store.conversion_by_request(connection, conversion.caller_id, conversion.request_id)

    conversion = await app.write(finish)
    if conversion.state == "failed":
        _log.error("conversion_failed", conversion_id=conversion.conversion_id, failure=conversion.failure_reason)
        return conversion
    _log.info(
        "conversion_completed",
        conversion_id=conversion.conversion_id,
        from_amount=conversion.from_amount,
        to_amount=conversion.to_amount,
    )
    return conversion


def _failed(conversion: Row) -> FailedPrecondition:
    reason = conversion.failure_reason
    if reason == "INSUFFICIENT_FUNDS":
        return InsufficientPoints("conversion", conversion.member_id, conversion.from_currency, conversion.from_amount)
    return FailedPrecondition("LEDGER_REFUSED", "the ledger refused the conversion", failure=reason or "")


async def history(app: App, caller: Caller, member: MemberRef, page_size: int) -> list[tuple[Row, Row]]:
    if not 0 <= page_size <= model.ACTIVITY_PAGE_SIZE_MAX:
        raise InvalidArgument("INVALID_PAGE_SIZE", f"page_size must be 0..{model.ACTIVITY_PAGE_SIZE_MAX}")
    limit = page_size or model.ACTIVITY_PAGE_SIZE_DEFAULT

    def work(connection: Connection) -> list[tuple[Row, Row]]:
        member_row = resolve_member(connection, app, member)
        rows = conversion_store.conversions_of_member(connection, member_row.member_id, limit * 4)
        visible = [
            row
            for row in rows
            if caller.is_admin
            or (caller.programme_currency and caller.programme_currency in (row.from_currency, row.to_currency))
        ]
        return [(row, conversion_store.get_quote(connection, row.quote_id)) for row in visible[:limit]]

    return await app.read(work)


async def recover_conversion(app: App, row: Row) -> str | None:
    """The recovery pass's step for a conversion recorded but whose legs were never posted
    because the client gave up (even if the quote expired since: it was valid when executed).
    Returns its state; UNAVAILABLE propagates (the ledger is away)."""
    done = await _complete(app, row)
    return done.state
