"""Earn use cases: proforma pricing, earning at the till, and offline batches."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Row, insert

from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ServiceError, Unavailable
from services.common.ledger_client import (
    LedgerRefused,
    TransferInput,
    TransferMetadata,
    failure_name,
    ledger_pb2,
    succeeded,
)
from services.partners import model, store
from services.partners.access import Caller, check_point_of_sale, require_active, require_partner
from services.partners.app import App
from services.partners.members import MemberRef, ensure_wallet, resolve_member

_log = structlog.get_logger("partners")


@dataclass(frozen=True, slots=True)
class EarnCommand:
    request_id: str
    store_id: str
    terminal_id: str
    receipt_id: str
    member: MemberRef
    lines: list[model.BasketLine]
    occur_time_us: int | None = None  # offline earns only


@dataclass(frozen=True, slots=True)
class EarnRecord:
    earn: Row
    lines: list[Row]


def _rule_at(connection: Connection, app: App, partner_id: str, at_us: int) -> model.EarnRule:
    rules = app.facts.earn_rules.get_or_load(partner_id, lambda: store.earn_rules_of(connection, partner_id))
    rule = model.select_version(rules, at_us)
    if rule is None:
        raise FailedPrecondition(
            "NO_EARN_RULE", "the partner has no earn rule in effect at this time; ask the operator"
        )
    return rule


async def quote_earn(
    app: App,
    caller: Caller,
    store_id: str,
    terminal_id: str,
    member: MemberRef | None,
    lines: list[model.BasketLine],
) -> model.EarnPricing:
    require_partner(caller)
    model.check_basket(lines)
    now = app.clock()

    def work(connection: Connection) -> model.EarnPricing:
        check_point_of_sale(connection, app.facts, caller, store_id, terminal_id)
        if member is not None:
            resolve_member(connection, app, member)
        return model.price_basket(_rule_at(connection, app, caller.partner_id, now), lines, now)

    return await app.read(work)


def _check_occur_time(occur_us: int, now: int) -> None:
    if occur_us > now + model.OFFLINE_FUTURE_SKEW_SECONDS_MAX * model.MICROS_PER_SECOND:
        raise InvalidArgument("OCCUR_TIME_IN_FUTURE", "occur_time is in the future; check the till's clock")
    if occur_us < now - model.OFFLINE_AGE_SECONDS_MAX * model.MICROS_PER_SECOND:
        raise InvalidArgument("OCCUR_TIME_TOO_OLD", "offline earns must be uploaded within 30 days")


async def earn(app: App, caller: Caller, command: EarnCommand) -> EarnRecord:
    """Record the priced earn first, then post it: a retry (even after a crash or a client
    timeout) re-sends the same ledger transfer, which the ledger applies at most once."""
    require_partner(caller)
    require_active(caller)
    model.check_request_id(command.request_id)
    model.check_local_id(command.receipt_id, "receipt_id")
    model.check_basket(command.lines)
    now = app.clock()
    at = now if command.occur_time_us is None else command.occur_time_us
    if command.occur_time_us is not None:
        _check_occur_time(at, now)
    partner_id = caller.partner_id
    earn_id = model.earn_transfer_id(partner_id, command.request_id)

    def record(connection: Connection) -> EarnRecord:
        check_point_of_sale(connection, app.facts, caller, command.store_id, command.terminal_id)
        member = resolve_member(connection, app, command.member)
        digest = model.fingerprint(
            store=command.store_id,
            terminal=command.terminal_id,
            receipt=command.receipt_id,
            member=member.member_id,
            lines=[(line.line_number, line.sku, line.category, line.quantity, line.amount) for line in command.lines],
            occur=command.occur_time_us,
        )
        existing = store.earn_by_request(connection, partner_id, command.request_id)
        if existing is None:
            same_receipt = store.earn_by_receipt(connection, partner_id, command.receipt_id)
            if same_receipt is not None and same_receipt.request_id != command.request_id:
                raise AlreadyExists(
                    "RECEIPT_ALREADY_EARNED",
                    "this receipt already earned points under another request_id",
                    receipt_id=command.receipt_id,
                )
            existing = same_receipt  # this very request, committed meanwhile (a retry racing its first send)
        if existing is not None:
            if existing.fingerprint != digest:
                raise AlreadyExists(
                    "ID_REUSED_WITH_DIFFERENT_CONTENT",
                    "this request_id was used for a different earn; use a new request_id",
                    request_id=command.request_id,
                )
            return EarnRecord(existing, list(store.earn_lines_of(connection, existing.earn_id)))
        pricing = model.price_basket(_rule_at(connection, app, partner_id, at), command.lines, at)
        connection.execute(
            insert(store.earns).values(
                earn_id=earn_id,
                partner_id=partner_id,
                request_id=command.request_id,
                fingerprint=digest,
                receipt_id=command.receipt_id,
                store_id=command.store_id,
                terminal_id=command.terminal_id,
                member_id=member.member_id,
                currency_code=pricing.currency_code,
                points=pricing.points,
                exact_points=str(pricing.exact_points),
                bonus_points=pricing.bonus_points,
                promotion_applied=pricing.promotion_applied,
                capped=pricing.capped,
                rule_version=pricing.rule_version,
                state="pending" if pricing.points > 0 else "posted",
                occur_time_us=at,
                create_time_us=now,
            )
        )
        connection.execute(
            insert(store.earn_lines),
            [
                dict(
                    earn_id=earn_id,
                    line_number=line.line_number,
                    sku=line.sku,
                    category=line.category,
                    quantity=line.quantity,
                    amount=line.amount,
                    points=priced.points,
                    exact_points=str(priced.exact_points),
                    excluded=priced.excluded,
                    return_id=None,
                )
                for line, priced in zip(command.lines, pricing.lines, strict=True)
            ],
        )
        return EarnRecord(store.earn_by_request(connection, partner_id, command.request_id), [])

    row = (await app.write(record, retry_unique_violation=True)).earn
    if row.state == "failed":
        raise _refused(row.earn_id, row.failure_reason)
    posting = row.state == "pending"
    if posting:
        await _post_or_fail(app, row)

    def finish(connection: Connection) -> EarnRecord:
        if posting:
            store.mark_earn_posted(connection, row.earn_id)
        earn_row = store.earn_by_request(connection, partner_id, command.request_id)
        return EarnRecord(earn_row, list(store.earn_lines_of(connection, row.earn_id)))

    done = await (app.write(finish) if posting else app.read(finish))
    if posting:
        _log.info("points_earned", earn_id=row.earn_id, points=row.points, currency=row.currency_code)
    return done


async def _post_earn(app: App, row: Row) -> None:
    wallet = await ensure_wallet(app, row.member_id, row.currency_code)
    transfer = TransferInput(
        id=row.earn_id,
        debit_account_id=model.issuance_account_id(row.currency_code, row.partner_id),
        credit_account_id=wallet,
        amount=row.points,
        currency_code=row.currency_code,
        kind=ledger_pb2.TRANSFER_KIND_POSTED,
        code=ledger_pb2.TRANSFER_CODE_EARN,
        metadata=TransferMetadata(
            partner_id=row.partner_id,
            store_id=row.store_id,
            terminal_id=row.terminal_id,
            receipt_id=row.receipt_id,
            member_id=row.member_id,
        ),
    )
    try:
        (result,) = await app.ledger.create_transfers([transfer])
    except LedgerRefused as error:
        if not error.invalid_argument:
            raise
        # The ledger refused this one transfer's content (e.g. an amount above its maximum,
        # recorded before earns were bounded): final, like a per-item refusal.
        raise _refused(row.earn_id, LEDGER_INVALID_ARGUMENT, str(error)) from None
    if not succeeded(result):
        raise _refused(row.earn_id, failure_name(result), result.failure_message)


# failure_reason of an item the ledger refused as a whole call with INVALID_ARGUMENT.
LEDGER_INVALID_ARGUMENT = "INVALID_ARGUMENT"


def _refused(earn_id: str, failure: str, detail: str = "") -> FailedPrecondition:
    return FailedPrecondition(
        "LEDGER_REFUSED",
        f"the ledger refused the earn{': ' + detail if detail else ''}; nothing was issued, "
        "and a retry of this request_id gets the same answer",
        earn_id=earn_id,
        failure=failure,
    )


async def _post_or_fail(app: App, row: Row) -> None:
    """Post a pending earn. The ledger remembers a refused transfer id forever, so a refusal
    is final: the earn is marked failed with the reason, and every retry answers with it."""
    try:
        await _post_earn(app, row)
    except FailedPrecondition as error:
        if error.reason != "LEDGER_REFUSED":
            raise
        failure = str(error.metadata.get("failure", "")) or "UNKNOWN"
        await app.write(lambda connection: store.mark_earn_failed(connection, row.earn_id, failure))
        _log.error("earn_failed", earn_id=row.earn_id, failure=failure, message=error.message)
        raise


# An earn younger than this is left to its client's own retry; older ones were given up on.
# Returns and conversions recorded but never finished use the same age.
PENDING_EARN_AGE_SECONDS_MIN = 10
# What one recovery pass of the server handles at most, per kind; the rest waits for the next pass.
PENDING_EARNS_PER_PASS_MAX = 100
PENDING_RETURNS_PER_PASS_MAX = 100
PENDING_CONVERSIONS_PER_PASS_MAX = 100
EXPIRED_HOLDS_PER_PASS_MAX = 100


async def post_pending_earns(app: App) -> int:
    """Post earns that were recorded but never posted (the ledger was down and the client
    never retried). Uses the same transfer id as the client's retry would, so the two can
    race harmlessly. Returns how many were posted; UNAVAILABLE propagates (try again later)."""
    cutoff = app.clock() - PENDING_EARN_AGE_SECONDS_MIN * model.MICROS_PER_SECOND
    rows = await app.read(lambda connection: store.pending_earns(connection, cutoff, PENDING_EARNS_PER_PASS_MAX))
    posted = 0
    for row in rows:
        try:
            await _post_or_fail(app, row)
        except Unavailable:
            raise
        except FailedPrecondition:
            continue  # marked failed and logged once; later passes no longer see it
        except Exception:
            # One earn must not stop the others: it stays pending and the next pass tries again.
            _log.exception("earn_recovery_failed", earn_id=row.earn_id)
            continue
        await app.write(lambda connection, earn_id=row.earn_id: store.mark_earn_posted(connection, earn_id))
        posted += 1
        _log.info("points_earned", earn_id=row.earn_id, points=row.points, currency=row.currency_code, recovered=True)
    return posted


@dataclass(frozen=True, slots=True)
class OfflineResult:
    request_id: str
    record: EarnRecord | None
    error: ServiceError | None


async def upload_offline_batch(app: App, caller: Caller, commands: list[EarnCommand]) -> list[OfflineResult]:
    """Each earn is idempotent on its own request_id, so replaying a batch changes nothing."""
    require_partner(caller)
    if not 1 <= len(commands) <= model.OFFLINE_BATCH_MAX:
        raise InvalidArgument("INVALID_BATCH_SIZE", f"a batch has 1..{model.OFFLINE_BATCH_MAX} earns")
    results = []
    for command in commands:
        try:
            results.append(OfflineResult(command.request_id, await earn(app, caller, command), None))
        except model.DomainError as error:
            results.append(OfflineResult(command.request_id, None, as_service_error(error)))
        except ServiceError as error:
            if error.code.name in ("UNAVAILABLE", "ABORTED"):
                raise  # the whole upload is retryable; items already done are idempotent
            results.append(OfflineResult(command.request_id, None, error))
    return results


def as_service_error(error: model.DomainError) -> ServiceError:
    kind = FailedPrecondition if error.precondition else InvalidArgument
    return kind(error.reason, error.message, **error.metadata)
