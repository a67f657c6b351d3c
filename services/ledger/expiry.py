"""Use case: lots follow every batch, and due lots expire (EXPIRY transfers wallet -> breakage).

Expiry is decided inside an ordinary transfer batch, after the wallets' balance rows are
locked: what is due is read under the same locks every capture takes, so an expiry never races
a capture into an overdraft, and a wallet with an open hold is left until the hold resolves.
Each EXPIRY transfer's id is derived from the wallet, the lot, the day it fell due and how many
times the lot has expired before, so a run repeated after a crash posts nothing twice.

The same pass records expiry notices (notices.py) for lots that have entered their notice
period, under the same locks, and expires a due lot only once its notice is old enough.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection

from services.common.sql import OneTrip
from services.ledger import limits, lot_store, lots, notice_store, notices, store
from services.ledger.model import SYSTEM_ID_PREFIX, Account, Balance, Kind, Posting, TransferCommand

EXPIRY_CODE = 5  # ledger_pb2.TRANSFER_CODE_EXPIRY
_log = structlog.get_logger("expiry")


@dataclass(slots=True)
class ExpiryRun:
    """One run's request and what it did."""

    as_of_us: int | None
    wallets_max: int
    after_account: str = ""  # the page starts after this wallet id
    wallets: list[str] = field(default_factory=list)
    breakage: dict[str, str] = field(default_factory=dict)  # currency -> breakage account
    targets: dict[str, str] = field(default_factory=dict)  # EXPIRY transfer id -> lot id
    amounts: dict[str, int] = field(default_factory=dict)
    notices: list[notices.ExpiryNotice] = field(default_factory=list)  # to record in this transaction
    deferred: int = 0
    posted: int = 0
    amount_expired: int = 0
    notices_recorded: int = 0

    def reset(self) -> None:  # the transaction may be retried from the start
        self.wallets, self.breakage, self.targets, self.amounts, self.notices = [], {}, {}, {}, []
        self.deferred = self.posted = self.amount_expired = self.notices_recorded = 0

    @property
    def full(self) -> bool:
        return len(self.wallets) >= self.wallets_max


def accounts_to_lock(connection: Connection, run: ExpiryRun) -> set[str]:
    """The wallets with lots that may be due or may need a notice, and their currencies' breakage accounts.

    Both lists are in id order after the same wallet, so the first wallets_max of their union
    are the page: no wallet of either is skipped."""
    now_us = store.clock_now_us(connection)
    as_of = run.as_of_us if run.as_of_us is not None else now_us
    due = lot_store.due_candidates(connection, as_of, run.after_account, run.wallets_max)
    # A little further ahead than notice_due looks: the locks below may take a moment.
    horizon_us = now_us + 2 * limits.NOTICE_LOOKAHEAD_US
    noticed = notice_store.notice_candidates(connection, horizon_us, run.after_account, run.wallets_max)
    run.wallets = sorted(set(due) | set(noticed))[: run.wallets_max]
    wallets = store.get_accounts(connection, run.wallets)
    run.breakage = lot_store.breakage_accounts(connection, {account.currency_code for account in wallets.values()})
    return set(run.wallets) | set(run.breakage.values())


def _expiry_id(account_id: str, lot: lots.Lot, due_day: str) -> str:
    digest = hashlib.sha256(f"{account_id}\n{lot.lot_id}\n{due_day}\n{lot.expiry_round}".encode()).hexdigest()
    return f"{SYSTEM_ID_PREFIX}expiry:{digest[:48]}"


def expiry_request(
    connection: Connection,
    run: ExpiryRun,
    accounts: dict[str, Account],
    balances: dict[str, Balance],
    now_us: int,
    zone: ZoneInfo,
) -> list[TransferCommand]:
    """EXPIRY transfers for every lot due at as_of, read under the wallets' locks."""
    as_of = now_us if run.as_of_us is None else min(run.as_of_us, now_us)
    wallets = [w for w in run.wallets if w in accounts and lots.is_tracked(accounts[w])]
    exempt, ended = lot_store.exemptions(connection, {accounts[w].owner_id for w in wallets})
    wallets = [w for w in wallets if accounts[w].owner_id not in exempt]
    open_lots = lot_store.open_lots(connection, wallets)
    activity = lot_store.last_activity(connection, wallets)
    known = notice_store.notices_of_lots(connection, open_lots)
    commands: list[TransferCommand] = []
    for wallet in wallets:
        account = accounts[wallet]
        breakage = run.breakage.get(account.currency_code)
        due = []
        for lot in sorted((lot for (owner, _), lot in open_lots.items() if owner == wallet), key=lots.Lot.order_key):
            expires = lots.lot_expiry_us(lot, activity.get(wallet), zone, ended.get(account.owner_id))
            if expires is None:
                continue
            notice = known.get(notices.notice_key(lot, expires))
            if notice is None:
                notice = notices.notice_due(
                    lot, expires, now_us, limits.NOTICE_LOOKAHEAD_US, account.owner_id, account.currency_code
                )
                if notice is not None:
                    run.notices.append(notice)
            if notices.may_expire(notice, as_of):
                due.append((lot, expires))
        if not due or breakage is None:
            continue
        if balances[wallet].debits_pending:  # an open hold: its points do not expire until it resolves
            run.deferred += 1
            continue
        for lot, expires in due:
            transfer_id = _expiry_id(wallet, lot, lots.local_date(expires - 1, zone).isoformat())
            run.targets[transfer_id] = lot.lot_id
            run.amounts[transfer_id] = lot.open_amount
            commands.append(
                TransferCommand(
                    id=transfer_id,
                    debit_account_id=wallet,
                    credit_account_id=breakage,
                    amount=lot.open_amount,
                    currency_code=account.currency_code,
                    kind=Kind.POSTED,
                    code=EXPIRY_CODE,
                    partner_id=lot.issuer_id,
                    member_id=account.owner_id,
                )
            )
    return commands


def record_notices(connection: Connection, run: ExpiryRun) -> None:
    """Write the notices expiry_request decided; the caller holds the wallets' and the clock's locks."""
    written = notice_store.insert_notices(connection, run.notices)
    run.notices_recorded = len(written)
    if written:
        _log.info("expiry_notices_recorded", count=len(written), last_notice_sequence=written[-1].notice_sequence)


def follow_lots(
    connection: Connection,
    accounts: dict[str, Account],
    postings: list[Posting],
    rules: lots.LotRules,
    run: ExpiryRun | None,
    policies: dict[str, list[lots.ExpiryPolicy]],
    trip: OneTrip | None = None,
) -> None:
    """Bring the lots of every tracked wallet the batch posted to in step with it, in the same
    transaction, under `policies` (each currency's versions, read under the batch's locks).
    With `trip`, the batch's writes wait in it: the lots' writes join them, and whatever reads
    a table the batch wrote sends them first."""
    moved = [p for p in postings if p.posted_amount > 0 and p.transfer.kind in (Kind.POSTED, Kind.POST_PENDING)]
    tracked = {
        account_id
        for posting in moved
        for account_id in (posting.transfer.debit_account_id, posting.transfer.credit_account_id)
        if lots.is_tracked(accounts[account_id])
    }
    if not tracked:
        return
    # What the batch can draw from each tracked wallet it debits: its lots are read that far.
    needs: dict[str, int] = {}
    for posting in moved:
        if posting.transfer.debit_account_id in tracked:
            account_id = posting.transfer.debit_account_id
            needs[account_id] = needs.get(account_id, 0) + posting.posted_amount
    reversed_ids = {p.transfer.reverses_transfer_id for p in moved if p.transfer.reverses_transfer_id}
    draws = lot_store.draws_of(connection, reversed_ids)
    named = {(d.account_id, d.lot_id) for items in draws.values() for d in items}
    if run is not None:  # an expiry draws from the lot it names, wherever that lot is in the order
        targets = run.targets
        named |= {(p.transfer.debit_account_id, targets[p.transfer.id]) for p in moved if p.transfer.id in targets}
    if reversed_ids and trip is not None:
        trip.send()  # a reversed transfer may be one this batch wrote
    originals = store.get_transfers(connection, reversed_ids) if reversed_ids else {}
    state = lots.LotState(
        zone=rules.zone,
        policies={accounts[a].currency_code: policies.get(accounts[a].currency_code, []) for a in tracked},
        # Only debits draw from open lots: a credit opens one (or gives back lots its draws name).
        lots={**lot_store.lots_by_key(connection, named), **lot_store.lots_to_draw(connection, needs)},
        draws=draws,
        currencies={account_id: accounts[account_id].currency_code for account_id in tracked},
        reinstated={t.id for t in originals.values() if t.code == EXPIRY_CODE},
    )
    try:
        lots.follow(state, moved, accounts, run.targets if run is not None else None)
    except lots.LotsShort as error:  # lots and balance disagree: never let it pass unseen
        _log.error("lots_disagree_with_balance", error=str(error))
        raise
    lot_store.write_changes(
        connection,
        trip,
        state.new_lots,
        (state.lots[key] for key in state.changed - {(lot.account_id, lot.lot_id) for lot in state.new_lots}),
        state.new_draws,
        state.active_wallets,
    )
    if run is not None:
        expired = [p for p in moved if p.transfer.id in run.targets]
        run.posted = len(expired)
        run.amount_expired = sum(p.posted_amount for p in expired)
