"""What becomes of a hold: capture (all or part) or void at the till, a redemption read back,
and the recovery pass's record of holds whose timeout passed, as the ledger decided them."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, Row

from services.common import logs
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.common.ledger_client import (
    Failure,
    TransferInput,
    failure_name,
    ledger_pb2,
    succeeded,
)
from services.partners import model, redemptions
from services.partners.access import Caller, require_active, require_partner
from services.partners.app import App
from services.partners.store import redemptions as redemption_store

_log = structlog.get_logger("partners")


# Captures, voids and redemption reads arriving together read their redemptions in one statement
# and record the ledger's answers in one write (services/common/coalescer.py).
REDEMPTION_BATCH_MAX = 256
REDEMPTIONS_QUEUED_MAX = 10_000


async def _load(app: App, redemption_id: str) -> Row | None:
    merger = app.merger(
        "redemption read", lambda ids: _load_batch(app, ids), REDEMPTION_BATCH_MAX, REDEMPTIONS_QUEUED_MAX
    )
    return await merger.submit(redemption_id)


async def _load_batch(app: App, redemption_ids: list[str]) -> list[Row | None]:
    # A read that starts after every call in it arrived: each sees what was committed before it asked.
    found = await app.read_statement(
        lambda connection: redemption_store.redemptions_by_id(connection, set(redemption_ids))
    )
    return [found.get(redemption_id) for redemption_id in redemption_ids]


@dataclass(frozen=True, slots=True)
class _Resolution:
    """A hold the ledger captured (with the amount and transfer) or voided, to be recorded."""

    redemption_id: str
    captured: tuple[int, str] | None  # (amount, capture transfer id); None: voided


async def _record(app: App, resolution: _Resolution) -> Row:
    merger = app.merger(
        "redemption resolution", lambda items: _record_batch(app, items), REDEMPTION_BATCH_MAX, REDEMPTIONS_QUEUED_MAX
    )
    return await merger.submit(resolution)


async def _record_batch(app: App, resolutions: list[_Resolution]) -> list[Row]:
    captured = {r.redemption_id: r.captured for r in resolutions if r.captured is not None}
    voided = {r.redemption_id for r in resolutions if r.captured is None}
    rows = await app.write(lambda connection: redemption_store.record_resolutions(connection, captured, voided))
    return [rows[resolution.redemption_id] for resolution in resolutions]


async def _owned(app: App, caller: Caller, redemption_id: str, placed_here: bool = False) -> Row:
    """The caller's redemption. With `placed_here` (a capture or void, which the ledger decides),
    a hold this process placed is taken from memory (facts.py says why that is safe)."""
    require_partner(caller)
    row = app.facts.holds.get(redemption_id) if placed_here and redemption_id else None
    if row is None and redemption_id:
        row = await _load(app, redemption_id)
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
        raise redemptions.refused(failure_name(result))
    reason, message, new_state = known
    # The hold is resolved: this process no longer answers from what it kept of it (facts.py),
    # so the next call here reads the row and refuses without a ledger write.
    app.facts.holds.forget(row.redemption_id)
    if new_state is not None and row.state == "authorized":  # `row` may be from memory: only if still so
        await app.write(
            lambda connection: redemption_store.resolve_authorized_redemption(connection, row.redemption_id, new_state)
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
    row = await _owned(app, caller, redemption_id, placed_here=True)
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
        metadata=redemptions.transfer_metadata(row),
    )
    result = await _resolve(app, row, transfer)
    captured = result.transfer.amount
    done = await _record(app, _Resolution(row.redemption_id, (captured, result.transfer.id)))
    app.facts.holds.put(row.redemption_id, done)  # resolved: a retry here is answered without the ledger
    logs.bind(redemption_id=row.redemption_id, captured_amount=captured)  # on the request's own line
    return done


async def void(app: App, caller: Caller, request_id: str, redemption_id: str) -> Row:
    model.check_request_id(request_id)
    row = await _owned(app, caller, redemption_id, placed_here=True)
    await _refuse_if_resolved(app, row, model.void_transfer_id(caller.partner_id, request_id))
    transfer = TransferInput(
        id=model.void_transfer_id(caller.partner_id, request_id),
        amount=0,
        kind=ledger_pb2.TRANSFER_KIND_VOID_PENDING,
        pending_id=row.redemption_id,
        code=ledger_pb2.TRANSFER_CODE_REDEEM,
        metadata=redemptions.transfer_metadata(row),
    )
    await _resolve(app, row, transfer)
    done = await _record(app, _Resolution(row.redemption_id, None))
    app.facts.holds.put(row.redemption_id, done)
    logs.bind(redemption_id=row.redemption_id)  # on the request's own line
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
    Returns the state recorded, or None while the ledger, whose clock decides expiry, still
    reports the hold pending. UNAVAILABLE propagates (the ledger is away)."""
    found = await app.ledger.get_transfers([row.redemption_id])
    if not found:
        # Authorized means the ledger took the hold; its absence is a bug to look at, not to guess about.
        raise RuntimeError(f"hold {row.redemption_id} is authorized here but missing in the ledger")
    state = _STATE_OF_HOLD.get(found[0].hold_state)
    if state is None:
        return None
    resolve = redemption_store.resolve_authorized_redemption
    if not await app.write(lambda connection: resolve(connection, row.redemption_id, state)):
        return "resolved_by_its_caller"  # a capture or void recorded meanwhile by its own call
    _log.info("redemption_recovered", redemption_id=row.redemption_id, state=state, amount=row.held_amount)
    return state
