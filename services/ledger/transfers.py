"""Use case: apply batches of transfers, and release holds whose timeout has passed.

One database transaction per batch: read what the items reference, lock every touched
balance row in id order, let the domain decide each item, then write the journal and each
touched balance once. Concurrent single-transfer calls reach here already merged into one
batch by the TransferBatcher, so a hot account is locked once per batch, not once per call.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from services.common.db import Database
from services.common.errors import InvalidArgument, PermissionDenied
from services.ledger import expiry, limits, lots, store
from services.ledger.authorization import GRANTS, OPERATOR, Grant
from services.ledger.model import (
    Account,
    BatchState,
    HoldState,
    Outcome,
    Transfer,
    TransferCommand,
    decide_batch,
    expire_command,
)


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """One CreateTransfers call: its commands and what its caller may do."""

    commands: list[TransferCommand]
    grant: Grant


def create_transfers(
    database: Database, requests: list[TransferRequest], rules: lots.LotRules = lots.DEFAULT_RULES
) -> list[list[Outcome] | PermissionDenied]:
    """Apply several independent requests in one transaction: per request its outcomes, or its refusal.

    A request with any transfer its caller may not post is refused whole and writes nothing.
    """
    return database.write(
        lambda connection: _apply(connection, requests, sweep=False, rules=rules), retry_unique_violation=True
    )


def expire_due_lots(
    database: Database, as_of_us: int | None, rules: lots.LotRules = lots.DEFAULT_RULES, after_account: str = ""
) -> expiry.ExpiryRun:
    """Post EXPIRY transfers for the next EXPIRY_RUN_WALLETS_MAX wallets (by id, after `after_account`)
    with lots that may be due at as_of (default now)."""
    run = expiry.ExpiryRun(as_of_us, limits.EXPIRY_RUN_WALLETS_MAX, after_account)

    def work(connection: Connection) -> expiry.ExpiryRun:
        run.reset()
        _apply(connection, [], sweep=False, rules=rules, lot_expiry=run)
        return run

    return database.write(work, retry_unique_violation=True)


def expire_due_holds(database: Database) -> int:
    """Release up to EXPIRY_SWEEP_HOLDS_MAX holds past their timeout; returns how many."""
    outcomes = database.write(lambda connection: _apply(connection, [], sweep=True), retry_unique_violation=True)
    return len(outcomes[0]) if outcomes else 0


def run_expiry(database: Database, as_of_us: int | None, rules: lots.LotRules) -> expiry.ExpiryRun:
    """Expire page after page until a page comes back short; the totals of all pages."""
    totals = expiry.ExpiryRun(as_of_us, 0)
    if as_of_us is not None and as_of_us > database.read(store.clock_now_us):
        raise InvalidArgument(
            "AS_OF_IN_FUTURE", "as_of_time is in the future; points expire only once due", field="as_of_time"
        )
    after = ""
    while True:
        page = expire_due_lots(database, as_of_us, rules, after)
        totals.posted += page.posted
        totals.amount_expired += page.amount_expired
        totals.deferred += page.deferred
        totals.notices_recorded += page.notices_recorded
        if not page.full:
            return totals
        after = page.wallets[-1]


def _apply(
    connection: Connection,
    requests: list[TransferRequest],
    sweep: bool,
    rules: lots.LotRules = lots.DEFAULT_RULES,
    lot_expiry: expiry.ExpiryRun | None = None,
) -> list[list[Outcome] | PermissionDenied]:
    commands = [command for request in requests for command in request.commands]
    item_ids = {command.id for command in commands}
    pending_ids = {command.pending_id for command in commands if command.pending_id}
    reversed_ids = {command.reverses_transfer_id for command in commands if command.reverses_transfer_id}
    account_ids = {command.debit_account_id for command in commands} | {
        command.credit_account_id for command in commands
    }
    # Referenced transfers are immutable, so reading them before taking locks is safe. Their
    # holds' states are not: those are read under the locks (lock_and_read_batch), not here.
    related = store.get_transfers(connection, pending_ids | reversed_ids, with_hold_states=False)
    for transfer in related.values():
        account_ids.update((transfer.debit_account_id, transfer.credit_account_id))
    account_ids.discard("")
    # Holds expiring a little after now are included too: their counterparts must be locked in
    # case the lock wait below carries the batch past their timeout.
    _, candidate_ids = store.clock_and_expired_holds(
        connection, None if sweep else account_ids, limits.EXPIRY_SWEEP_HOLDS_MAX, limits.EXPIRY_LOOKAHEAD_US
    )
    candidates = store.get_transfers(connection, candidate_ids)
    for transfer in candidates.values():
        account_ids.update((transfer.debit_account_id, transfer.credit_account_id))
    if lot_expiry is not None:
        account_ids.update(expiry.accounts_to_lock(connection, lot_expiry))

    # The clock is read after the locks, the clock row's included (always taken after the
    # account rows): expiry is then decided in commit order, never against a read made meanwhile.
    # Which ids are known, and the holds' states, are read under the locks too: whatever
    # resolves or creates them must hold the same locks first. Every hold that can expire in
    # this batch is a candidate, so the candidates' states cover the expired ones'.
    locked = store.lock_and_read_batch(connection, account_ids, item_ids, pending_ids | set(candidates))
    accounts, balances, clock = locked.accounts, locked.balances, locked.clock
    committed_ids, failed_ids = locked.committed_ids, locked.failed_ids
    now_us = clock.now_us
    expired = {pid: t for pid, t in candidates.items() if t.expires_at_us is not None and t.expires_at_us <= now_us}
    expired_ids = sorted(expired)
    if lot_expiry is not None:  # decided under the wallets' locks, so a capture cannot race it
        request = expiry.expiry_request(connection, lot_expiry, accounts, balances, now_us, rules.zone)
        expiry.record_notices(connection, lot_expiry)
        requests = [*requests, TransferRequest(request, GRANTS[OPERATOR])]
        expiry_committed, expiry_failed = store.known_ids(connection, {command.id for command in request})
        committed_ids |= expiry_committed
        failed_ids |= expiry_failed
    existing = store.get_transfers(connection, committed_ids)
    failures = store.remembered_failures(connection, failed_ids - committed_ids) if failed_ids else {}
    states = {pid: locked.hold_states[pid] for pid in pending_ids | set(expired_ids)}
    state = BatchState(
        now_us=now_us,
        accounts=accounts,
        balances=balances,
        transfers={**related, **expired, **existing},
        remembered_failures=failures,
        hold_states=states,
        reversed_totals=store.reversed_totals(connection, reversed_ids),
        reinstatement_window_us=rules.reinstatement_window_us,
    )
    expirations = [
        [expire_command(expired[pending_id])]
        for pending_id in expired_ids
        if states.get(pending_id) is HoldState.PENDING
    ]
    expiry_outcomes = decide_batch(state, expirations)
    refusals = _refusals(requests, accounts, state.transfers)
    decided = decide_batch(
        state, [r.commands if refused is None else [] for r, refused in zip(requests, refusals, strict=True)]
    )
    outcomes = [outcome if refused is None else refused for refused, outcome in zip(refusals, decided, strict=True)]
    if not state.postings and not state.new_failures:
        return [[outcome for request in expiry_outcomes for outcome in request]] if sweep else outcomes
    trip = store.one_trip_for(connection, len(state.postings))
    first_sequence, committed_at_us = store.advance_clock(connection, clock, len(state.postings), trip)
    committed = store.write_batch(
        connection,
        state.postings,
        state.new_failures,
        state.balances,
        state.touched_accounts,
        first_sequence,
        committed_at_us,
        trip,
    )
    del committed  # the outcomes hold the same Transfer objects, now stamped with sequence and time
    expiry.follow_lots(connection, accounts, state.postings, rules, lot_expiry, locked.policies, trip)
    if trip is not None:
        trip.send()
    if sweep:
        return [[outcome for request in expiry_outcomes for outcome in request]]
    return outcomes


def _refusals(
    requests: list[TransferRequest], accounts: dict[str, Account], committed: dict[str, Transfer]
) -> list[PermissionDenied | None]:
    """Per request, why its caller may not post it whole, or None."""
    creators: dict[str, int] = {}
    for number, request in enumerate(requests):
        for command in request.commands:
            creators.setdefault(command.id, number)
    refusals: list[PermissionDenied | None] = []
    for number, request in enumerate(requests):
        own = {command.id: command for command in request.commands}
        referenced: dict[str, Transfer | TransferCommand | None] = {}
        for command in request.commands:
            for reference in (command.pending_id, command.reverses_transfer_id):
                if not reference:
                    continue
                if reference in committed:
                    referenced[reference] = committed[reference]
                elif reference in own:
                    referenced[reference] = own[reference]
                elif reference in creators and creators[reference] != number:
                    referenced[reference] = None
        refusal = None
        for index, command in enumerate(request.commands):
            refusal = request.grant.transfer_denial(command, index, accounts, referenced)
            if refusal is not None:
                break
        refusals.append(refusal)
    return refusals
