"""Redemption use cases: hold points as a tender, then capture (all or part) or void.

The ledger's no-overdraft check on the member's wallet is what stops concurrent holds from
overspending; this module never decides availability itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Row
from sqlalchemy import exc as sa_exc

from services.common.coalescer import outcome
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.ledger_client import (
    Failure,
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
from services.partners.store import redemptions as redemption_store

_log = structlog.get_logger("partners")


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


def _metadata(row: Row) -> TransferMetadata:
    return TransferMetadata(
        partner_id=row.partner_id,
        store_id=row.store_id,
        terminal_id=row.terminal_id,
        receipt_id=row.receipt_id,
        member_id=row.member_id,
    )


def _insufficient(row: Row) -> FailedPrecondition:
    return FailedPrecondition(
        "INSUFFICIENT_POINTS",
        "the member's available points do not cover the amount",
        requested=row.held_amount,
        currency=row.currency_code,
    )


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
    return await merger.submit(_Authorizing(caller, command, timeout, app.clock()))


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
    pending = {r.redemption_id: r for r in recorded if isinstance(r, Row) and r.state == "pending"}
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
        _log.info("points_held", redemption_id=redemption_id, amount=pending[redemption_id].held_amount)
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
    return _insufficient(row) if reason == "INSUFFICIENT_FUNDS" else _refused(reason)


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
    keys = {(item.caller.partner_id, item.command.request_id) for item in items}
    known: dict[tuple[str, str], Row | dict] = {
        (row.partner_id, row.request_id): row for row in redemption_store.redemptions_by_requests(connection, keys)
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
        expire_time_us=item.now + item.timeout_seconds * model.MICROS_PER_SECOND,
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
        metadata=_metadata(row),
    )


def _refused(reason: str | None) -> FailedPrecondition:
    return FailedPrecondition("LEDGER_REFUSED", "the ledger refused the redemption", failure=reason or "")


async def _load(app: App, redemption_id: str) -> Row:
    return await app.read(lambda connection: redemption_store.get_redemption(connection, redemption_id))


async def _owned(app: App, caller: Caller, redemption_id: str) -> Row:
    require_partner(caller)
    row = await _load(app, redemption_id) if redemption_id else None
    if row is None or row.partner_id != caller.partner_id:
        # Another partner's redemption is reported as absent: its existence is not ours to reveal.
        raise NotFound("REDEMPTION_NOT_FOUND", "no redemption with this id", redemption_id=redemption_id)
    if row.state in ("pending", "failed"):
        raise FailedPrecondition("REDEMPTION_NOT_AUTHORIZED", "the hold was never placed", redemption_id=redemption_id)
    return row


_RESOLVE_ERRORS = {
    Failure.FAILURE_REASON_HOLD_EXPIRED: ("HOLD_EXPIRED", "the hold expired; authorize again", "expired"),
    Failure.FAILURE_REASON_PENDING_TRANSFER_ALREADY_POSTED: (
        "HOLD_ALREADY_CAPTURED",
        "the hold was captured",
        None,
    ),
    Failure.FAILURE_REASON_PENDING_TRANSFER_ALREADY_VOIDED: (
        "HOLD_ALREADY_VOIDED",
        "the hold was voided",
        None,
    ),
}


async def _resolve(app: App, row: Row, transfer: TransferInput) -> ledger_pb2.CreateTransferResult:
    (result,) = await app.ledger.create_transfers([transfer])
    if succeeded(result):
        return result
    if result.failure_reason == Failure.FAILURE_REASON_ID_REUSED_WITH_DIFFERENT_CONTENT:
        raise AlreadyExists(
            "ID_REUSED_WITH_DIFFERENT_CONTENT",
            "this request_id was used for a different capture or void",
            field=result.failure_field,
        )
    if result.failure_reason == Failure.FAILURE_REASON_POST_AMOUNT_EXCEEDS_PENDING:
        raise InvalidArgument("AMOUNT_EXCEEDS_HOLD", "amount is larger than the held amount", held=row.held_amount)
    known = _RESOLVE_ERRORS.get(result.failure_reason)
    if known is None:
        raise _refused(failure_name(result))
    reason, message, new_state = known
    if new_state is not None and row.state == "authorized":
        await app.write(
            lambda connection: redemption_store.update_redemption(connection, row.redemption_id, state=new_state)
        )
    raise FailedPrecondition(reason, message, redemption_id=row.redemption_id)


_FINAL_STATES = {
    "captured": ("HOLD_ALREADY_CAPTURED", "the hold was captured"),
    "voided": ("HOLD_ALREADY_VOIDED", "the hold was voided"),
    "expired": ("HOLD_EXPIRED", "the hold expired; authorize again"),
}


async def _refuse_if_resolved(app: App, row: Row, transfer_id: str) -> None:
    """Refuse a capture or void of a hold already resolved here, without a ledger write.

    Only a retry of the very transfer that resolved it goes on (the ledger answers it with the
    first result); anything else would only store a permanent failure row in the ledger's journal.
    """
    refusal = _FINAL_STATES.get(row.state)
    if refusal is None:
        return
    if row.state == "captured" and row.capture_transfer_id == transfer_id:
        return
    # The recovery pass may have recorded a resolution without its transfer id: ask with a read.
    if row.state != "expired" and await app.ledger.get_transfers([transfer_id]):
        return
    reason, message = refusal
    raise FailedPrecondition(reason, message, redemption_id=row.redemption_id)


async def capture(app: App, caller: Caller, request_id: str, redemption_id: str, amount: int) -> Row:
    model.check_request_id(request_id)
    row = await _owned(app, caller, redemption_id)
    require_active(caller)
    if not 0 <= amount <= row.held_amount:
        raise InvalidArgument("AMOUNT_EXCEEDS_HOLD", "amount must be 0 (all) .. the held amount", held=row.held_amount)
    await _refuse_if_resolved(app, row, model.capture_transfer_id(caller.partner_id, request_id))
    transfer = TransferInput(
        id=model.capture_transfer_id(caller.partner_id, request_id),
        amount=amount or row.held_amount,
        kind=ledger_pb2.TRANSFER_KIND_POST_PENDING,
        pending_id=row.redemption_id,
        code=ledger_pb2.TRANSFER_CODE_REDEEM,
        metadata=_metadata(row),
    )
    result = await _resolve(app, row, transfer)
    captured = result.transfer.amount

    def record(connection: Connection) -> Row:
        return redemption_store.update_redemption(
            connection,
            row.redemption_id,
            state="captured",
            captured_amount=captured,
            capture_transfer_id=result.transfer.id,
        )

    done = await app.write(record)
    _log.info("points_redeemed", redemption_id=row.redemption_id, amount=captured)
    return done


async def void(app: App, caller: Caller, request_id: str, redemption_id: str) -> Row:
    model.check_request_id(request_id)
    row = await _owned(app, caller, redemption_id)
    await _refuse_if_resolved(app, row, model.void_transfer_id(caller.partner_id, request_id))
    transfer = TransferInput(
        id=model.void_transfer_id(caller.partner_id, request_id),
        amount=0,
        kind=ledger_pb2.TRANSFER_KIND_VOID_PENDING,
        pending_id=row.redemption_id,
        code=ledger_pb2.TRANSFER_CODE_REDEEM,
        metadata=_metadata(row),
    )
    await _resolve(app, row, transfer)

    def record(connection: Connection) -> Row:
        return redemption_store.update_redemption(connection, row.redemption_id, state="voided")

    done = await app.write(record)
    _log.info("hold_voided", redemption_id=row.redemption_id)
    return done


async def get(app: App, caller: Caller, redemption_id: str) -> Row:
    """A redemption as it stands: an authorized hold is checked against the ledger, which
    decides expiry by its own clock, so a hold nobody captured or voided shows EXPIRED."""
    row = await _owned(app, caller, redemption_id)
    if row.state != "authorized":
        return row
    transfers = await app.ledger.get_transfers([row.redemption_id])
    if transfers and transfers[0].hold_state == ledger_pb2.HOLD_STATE_EXPIRED:

        def expired(connection: Connection) -> Row:
            current = redemption_store.get_redemption(connection, row.redemption_id)
            if current.state == "authorized":
                redemption_store.update_redemption(connection, row.redemption_id, state="expired")
                _log.info("hold_expired", redemption_id=row.redemption_id, amount=row.held_amount)
            return redemption_store.get_redemption(connection, row.redemption_id)

        return await app.write(expired)
    return row


# What the ledger's hold state means for a redemption still recorded as authorized.
_STATE_OF_HOLD = {
    ledger_pb2.HOLD_STATE_EXPIRED: "expired",
    ledger_pb2.HOLD_STATE_POSTED: "captured",
    ledger_pb2.HOLD_STATE_VOIDED: "voided",
}


async def recover_hold(app: App, row: Row) -> str | None:
    """The recovery pass's step for an authorized hold whose timeout passed: record what became
    of it, as the ledger says. EXPIRED mostly; CAPTURED or VOIDED when a capture or void reached
    the ledger but its caller gave up before recording it (a capture recorded this way shows no
    captured amount until that capture's own retry records it; the ledger returns it then).
    Returns the new state, or None while the ledger, whose clock decides expiry, still reports
    the hold pending. UNAVAILABLE propagates (the ledger is away)."""
    found = await app.ledger.get_transfers([row.redemption_id])
    if not found:
        # Authorized means the ledger took the hold; its absence is a bug to look at, not to guess about.
        raise RuntimeError(f"hold {row.redemption_id} is authorized here but missing in the ledger")
    state = _STATE_OF_HOLD.get(found[0].hold_state)
    if state is None:
        return None
    if await app.write(
        lambda connection: redemption_store.resolve_authorized_redemption(connection, row.redemption_id, state)
    ):
        _log.info("redemption_recovered", redemption_id=row.redemption_id, state=state, amount=row.held_amount)
    return state
