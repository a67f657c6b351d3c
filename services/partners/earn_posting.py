"""Posting recorded earns to the ledger and recording what it answered: one ledger call for a
batch of earns, a refusal final and kept with its reason, and the recovery pass's step for
earns their client gave up on."""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, Row

from services.common.errors import FailedPrecondition
from services.common.ledger_client import (
    LedgerRefused,
    TransferInput,
    TransferMetadata,
    failure_name,
    ledger_pb2,
    succeeded,
)
from services.partners import model, recording, tier_book
from services.partners.app import App
from services.partners.members import ensure_wallet
from services.partners.store import earns as earn_store

_log = structlog.get_logger("partners")


def record_failures(connection: Connection, failures: dict[str, FailedPrecondition]) -> None:
    """Mark the earns the ledger refused for good; one it holds a transfer for stays pending. A
    refused earn uses up nothing: not the qualifying points it counted for tiers either."""
    refused_now = [
        earn_id
        for earn_id, error in failures.items()
        if error.reason != HELD_BY_LEDGER and earn_store.mark_earn_failed(connection, earn_id, failure_of(error))
    ]
    if refused_now:
        for row in earn_store.earns_by_id(connection, refused_now).values():
            tier_book.take_back_earn(connection, row)


def read_back(connection: Connection, earn_ids: set[str]) -> tuple[dict[str, Row], dict[str, list[Row]]]:
    """Earns recorded before (retries), as their callers will see them."""
    ids = sorted(earn_ids)
    return earn_store.earns_by_id(connection, ids), earn_store.earn_lines_of_many(connection, ids)


def failure_of(error: FailedPrecondition) -> str:
    return str(error.metadata.get("failure", "")) or "UNKNOWN"


def earn_transfer(row: Row) -> TransferInput:
    return TransferInput(
        id=row.earn_id,
        debit_account_id=model.issuance_account_id(row.currency_code, row.partner_id),
        credit_account_id=model.wallet_account_id(row.currency_code, row.member_id),
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
            tier_bonus_points=row.tier_bonus_points,
        ),
    )


async def post_earns(app: App, rows: list[Row]) -> dict[str, FailedPrecondition]:
    """Post pending earns in one ledger call; returns the ones the ledger refused and holds no
    transfer for (final: the ledger remembers a refused transfer id forever). UNAVAILABLE
    propagates: the earns stay pending for the client's retry or the recovery pass."""
    if not rows:
        return {}
    for member_id, currency in dict.fromkeys((row.member_id, row.currency_code) for row in rows):
        await ensure_wallet(app, member_id, currency)
    results = await app.ledger.create_transfers_apart([earn_transfer(row) for row in rows])
    failures: dict[str, FailedPrecondition] = {}
    for row, result in zip(rows, results, strict=True):
        if isinstance(result, LedgerRefused):
            # The ledger refused this transfer's content (e.g. an amount above its maximum,
            # recorded before earns were bounded): final, like a per-item refusal.
            failures[row.earn_id] = refused(row.earn_id, recording.LEDGER_INVALID_ARGUMENT, str(result))
        elif not succeeded(result):
            failures[row.earn_id] = refused(row.earn_id, failure_name(result), result.failure_message)
    if failures:
        # A refused earn frees its receipt for a new request id, so it is marked failed only
        # when the ledger holds no transfer under its id: a refusal like "id reused with other
        # content" means the ledger already holds (and issued) it, e.g. after a restore of this
        # database; such an earn stays pending, and is looked at, instead of being earned twice.
        for transfer in await app.ledger.get_transfers(list(failures)):
            _log.error(
                "earn_refused_but_held_by_ledger", earn_id=transfer.id, failure=failure_of(failures[transfer.id])
            )
            failures[transfer.id] = FailedPrecondition(
                HELD_BY_LEDGER,
                "the ledger holds another transfer under this earn's id; the operator must reconcile it",
                earn_id=transfer.id,
            )
    for earn_id, error in failures.items():
        _log.error("earn_failed", earn_id=earn_id, failure=failure_of(error), message=error.message)
    return failures


# The reason of an earn the ledger refused although it holds a transfer under the earn's id:
# not final (the earn stays pending and its receipt taken) until an operator reconciles it.
HELD_BY_LEDGER = "EARN_CONFLICTS_WITH_LEDGER"


def refused(earn_id: str, failure: str, detail: str = "") -> FailedPrecondition:
    return FailedPrecondition(
        "LEDGER_REFUSED",
        f"the ledger refused the earn{': ' + detail if detail else ''}; nothing was issued, "
        "and a retry of this request_id gets the same answer",
        earn_id=earn_id,
        failure=failure,
    )


async def recover_earn(app: App, row: Row) -> str | None:
    """The recovery pass's step for an earn recorded but never posted (the ledger was down and
    the client never retried). Same transfer id as the client's retry, so the two race
    harmlessly. Returns the earn's state; UNAVAILABLE propagates (try again later)."""
    failures = await post_earns(app, [row])
    if any(error.reason == HELD_BY_LEDGER for error in failures.values()):
        raise RuntimeError(f"earn {row.earn_id}: the ledger holds another transfer under its id")  # counted, backs off
    if failures:
        await app.write(lambda connection: record_failures(connection, failures))
    else:
        await app.write(lambda connection: earn_store.mark_earns_posted(connection, [row.earn_id]))
    if failures:  # marked failed and logged once; later passes no longer see it
        return "failed"
    _log.info("points_earned", earn_id=row.earn_id, points=row.points, currency=row.currency_code, recovered=True)
    return "posted"
