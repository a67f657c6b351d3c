"""Redemption use cases: hold points as a tender (captures.py then captures all or part, or voids).

The ledger's no-overdraft check on the member's wallet is what stops concurrent holds from
overspending; this module never decides availability itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Row
from sqlalchemy import exc as sa_exc

from services.common import logs
from services.common.coalescer import outcome
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from services.common.ledger_client import (
    TransferInput,
    TransferMetadata,
    failure_name,
    ledger_pb2,
    succeeded,
)
from services.partners import model, recording
from services.partners.access import Caller, require_active, require_partner
from services.partners.app import App
from services.partners.members import MemberRef, ensure_wallet
from services.partners.shortfall import InsufficientPoints, with_available
from services.partners.store import redemptions as redemption_store


@dataclass(frozen=True, slots=True)
class AuthorizeCommand:
    request_id: str
    store_id: str
    terminal_id: str
    receipt_id: str
    member: MemberRef
    currency_code: str
    amount: int
    hold_timeout_seconds: int


def transfer_metadata(row: Row) -> TransferMetadata:
    return TransferMetadata(
        partner_id=row.partner_id,
        store_id=row.store_id,
        terminal_id=row.terminal_id,
        receipt_id=row.receipt_id,
        member_id=row.member_id,
    )


def _insufficient(row: Row) -> FailedPrecondition:
    return InsufficientPoints("amount", row.member_id, row.currency_code, row.held_amount)


async def authorize(app: App, caller: Caller, command: AuthorizeCommand) -> Row:
    require_partner(caller)
    require_active(caller)
    model.check_request_id(command.request_id)
    model.check_local_id(command.receipt_id, "receipt_id")
    if not 1 <= command.amount <= model.REDEMPTION_AMOUNT_MAX:
        raise InvalidArgument("INVALID_AMOUNT", f"amount must be 1..{model.REDEMPTION_AMOUNT_MAX}")
    timeout = command.hold_timeout_seconds or model.HOLD_TIMEOUT_SECONDS_DEFAULT
    if not 1 <= timeout <= model.HOLD_TIMEOUT_SECONDS_MAX:
        raise InvalidArgument(
            "INVALID_HOLD_TIMEOUT", f"hold_timeout_seconds must be 0..{model.HOLD_TIMEOUT_SECONDS_MAX}"
        )
    if command.currency_code not in (
        model.COMMON_CURRENCY,
        caller.programme_currency or model.COMMON_CURRENCY,
    ):
        raise InvalidArgument(
            "CURRENCY_NOT_ACCEPTED",
            "a partner accepts PTS or its own programme currency",
            currency=command.currency_code,
        )
    merger = app.merger("authorize", lambda items: _authorize_batch(app, items), HOLD_BATCH_MAX, HOLDS_QUEUED_MAX)
    try:
        held = await merger.submit(_Authorizing(caller, command, timeout, app.clock()))
    except InsufficientPoints as error:
        raise await with_available(app, error) from None
    # On the request's own log line (the batch runs in another task, whose lines are no one request's).
    logs.bind(redemption_id=held.redemption_id, amount=held.held_amount, currency=held.currency_code)
    return held


@dataclass(frozen=True, slots=True)
class _Authorizing:
    """One AuthorizeRedemption call, checked and dated, waiting to be merged with its neighbours."""

    caller: Caller
    command: AuthorizeCommand
    timeout_seconds: int
    now: int


# Holds merged into one transaction and one ledger call at most, and waiting at most.
HOLD_BATCH_MAX = 256
HOLDS_QUEUED_MAX = 10_000


async def _authorize_batch(app: App, items: list[_Authorizing]) -> list[Row | BaseException]:
    """Concurrent holds: one transaction records them (two statements whatever their number), one
    ledger call places them, one transaction records what the ledger answered."""
    try:
        recorded = await app.write(lambda connection: _record_holds(connection, app, items))
    except sa_exc.IntegrityError:  # another process recorded one of these meanwhile: each on its own
        recorded = [await outcome(app.write(_one_hold(app, item), retry_unique_violation=True)) for item in items]
    pending = {r.redemption_id: r for r in recorded if not isinstance(r, BaseException) and r.state == "pending"}
    try:
        placed = await _place_holds(app, list(pending.values()))
        unplaced: BaseException | None = None
    except Exception as error:  # the ledger unreachable: these holds stay pending for a retry
        placed, unplaced = {}, error
    authorized, failed = {}, {}
    for redemption_id, result in placed.items():
        if isinstance(result, BaseException):
            continue
        if succeeded(result):
            expire = result.transfer.expire_time
            authorized[redemption_id] = expire.seconds * model.MICROS_PER_SECOND + expire.nanos // 1000
        else:
            failed[redemption_id] = failure_name(result)
    rows = (
        await app.write(lambda connection: redemption_store.settle_holds(connection, authorized, failed))
        if placed
        else {}
    )
    for redemption_id in authorized:
        app.facts.holds.put(redemption_id, rows[redemption_id])  # the capture at this till reads it from here
    return [_hold_answer(one, placed, unplaced, rows) for one in recorded]


def _hold_answer(
    recorded: Row | BaseException, placed: dict, unplaced: BaseException | None, rows: dict[str, Row]
) -> Row | BaseException:
    if isinstance(recorded, BaseException):
        return recorded
    if recorded.state == "failed":
        return _ledger_refusal(recorded, recorded.failure_reason)
    if recorded.state != "pending":
        return recorded
    if unplaced is not None:
        return unplaced
    result = placed[recorded.redemption_id]
    if isinstance(result, BaseException):
        return result
    if succeeded(result):
        return rows[recorded.redemption_id]
    return _ledger_refusal(recorded, failure_name(result))


def _ledger_refusal(row: Row, reason: str | None) -> FailedPrecondition:
    return _insufficient(row) if reason == "INSUFFICIENT_FUNDS" else refused(reason)


async def _place_holds(app: App, rows: list[Row]) -> dict[str, ledger_pb2.CreateTransferResult | BaseException]:
    """One ledger call for the holds; a hold whose wallet cannot be made, or whose content the
    ledger refuses as a whole call, gets its own error and never fails the others."""
    if not rows:
        return {}
    placed: dict[str, ledger_pb2.CreateTransferResult | BaseException] = {}
    ready = []
    for row in rows:
        try:
            await ensure_wallet(app, row.member_id, row.currency_code)
            ready.append(row)
        except (Unavailable, sa_exc.OperationalError):
            raise
        except Exception as error:
            placed[row.redemption_id] = error
    results = await app.ledger.create_transfers_apart([_hold_transfer(row) for row in ready])
    placed.update({row.redemption_id: result for row, result in zip(ready, results, strict=True)})
    return placed


def _record_holds(connection: Connection, app: App, items: list[_Authorizing]) -> list[Row | BaseException]:
    """Record a batch of holds with one read and one insert. Each is the one recorded before
    under its request id (a retry) or a new pending one; a refusal is its answer and writes
    nothing; holds later in the batch see the ones before them."""
    # By primary key: a hold's id is made from (partner_id, request_id) (model.hold_transfer_id).
    # Looked up by the pair, PostgreSQL planned from statistics taken while the table was small
    # and read all of the partner's redemptions through the receipt index: 9 ms per batch at
    # 6,500 rows, growing with the table.
    ids = {model.hold_transfer_id(item.caller.partner_id, item.command.request_id) for item in items}
    known: dict[tuple[str, str], Row | dict] = {
        (row.partner_id, row.request_id): row for row in redemption_store.redemptions_by_id(connection, ids).values()
    }
    return recording.record_batch(
        items,
        lambda item: _decide_hold(connection, app, item, known),
        lambda decision: isinstance(decision, dict),
        lambda new: redemption_store.insert_redemptions(connection, new),
    )


def _one_hold(app: App, item: _Authorizing):
    """The same for one hold alone (after a unique-key conflict with another process)."""

    def work(connection: Connection) -> Row:
        result = _record_holds(connection, app, [item])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    return work


def _decide_hold(connection: Connection, app: App, item: _Authorizing, known: dict) -> Row | dict:
    caller, command = item.caller, item.command
    member = recording.till_member(connection, app, caller, command.store_id, command.terminal_id, command.member)
    digest = model.fingerprint(
        store=command.store_id,
        terminal=command.terminal_id,
        receipt=command.receipt_id,
        member=member.member_id,
        currency=command.currency_code,
        amount=command.amount,
        timeout=item.timeout_seconds,
    )
    key = (caller.partner_id, command.request_id)
    existing = known.get(key)
    if existing is not None:
        fingerprint = existing["fingerprint"] if isinstance(existing, dict) else existing.fingerprint
        recording.same_request(fingerprint, digest, command.request_id, "redemption")
        return existing
    known[key] = dict(
        redemption_id=model.hold_transfer_id(caller.partner_id, command.request_id),
        partner_id=caller.partner_id,
        request_id=command.request_id,
        fingerprint=digest,
        receipt_id=command.receipt_id,
        store_id=command.store_id,
        terminal_id=command.terminal_id,
        member_id=member.member_id,
        currency_code=command.currency_code,
        held_amount=command.amount,
        captured_amount=0,
        refunded_amount=0,
        state="pending",
        capture_transfer_id=None,
        failure_reason=None,
        expire_time_us=item.now + item.timeout_seconds * model.MICROS_PER_SECOND,
        recovery_attempts=0,
        next_recovery_us=0,
        create_time_us=item.now,
    )
    return known[key]


def _hold_transfer(row: Row) -> TransferInput:
    return TransferInput(
        id=row.redemption_id,
        debit_account_id=model.wallet_account_id(row.currency_code, row.member_id),
        credit_account_id=model.redemption_account_id(row.currency_code, row.partner_id),
        amount=row.held_amount,
        currency_code=row.currency_code,
        kind=ledger_pb2.TRANSFER_KIND_PENDING,
        timeout_seconds=(row.expire_time_us - row.create_time_us) // model.MICROS_PER_SECOND,
        code=ledger_pb2.TRANSFER_CODE_REDEEM,
        metadata=transfer_metadata(row),
    )


def refused(reason: str | None) -> FailedPrecondition:
    return FailedPrecondition("LEDGER_REFUSED", "the ledger refused the redemption", failure=reason or "")
