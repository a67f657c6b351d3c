"""Use cases that only read: accounts, transfers, balances, entries, trial balance, activity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from sqlalchemy import Connection

from services.common.db import Database
from services.common.errors import InvalidArgument, NotFound
from services.common.page_token import decode_page_token, encode_page_token
from services.ledger import notice_store, store
from services.ledger.model import Account, Balance, HoldState, Kind, Side, Transfer
from services.ledger.notices import ExpiryNotice

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BalanceView:
    account: Account
    balance: Balance
    as_of_us: int


@dataclass(frozen=True, slots=True)
class EntryView:
    transfer: Transfer
    account: Account
    side: Side
    posted_amount: int
    pending_change: int
    balance_after: Balance
    as_of_us: int


def _current(balance: Balance, released: Balance | None) -> Balance:
    if released is None:
        return balance
    return Balance(
        balance.debits_posted,
        balance.credits_posted,
        balance.debits_pending - released.debits_pending,
        balance.credits_pending - released.credits_pending,
    )


def _settled(found: tuple[Account, Balance] | None) -> bool:
    return found is not None and not found[1].debits_pending and not found[1].credits_pending


def _read_deciding_expiry(database: Database, work: Callable[[Connection, int], tuple[T, bool]]) -> T:
    """Run a read that may report a hold expired by the clock (or free its amount).

    `work(connection, now_us)` returns its answer and whether the clock decided a hold's fate in
    it. Such an answer is a decision about the hold, so it is made again in commit order: with the
    clock row shared (store.lock_clock), after any batch that decided before the expiry has
    committed and before any later batch reads the clock. Reads that decide nothing stay lock-free.
    """
    answer, decided = database.read(lambda connection: work(connection, store.clock_now_us(connection)))
    if not decided:
        return answer

    def in_commit_order(connection: Connection) -> tuple[T, bool]:
        store.lock_clock(connection, shared=True)
        return work(connection, store.clock_now_us(connection))

    return database.write(in_commit_order)[0]


def get_balances(database: Database, account_ids: list[str], as_of_us: int | None) -> list[BalanceView]:
    if as_of_us is None:
        # Most reads ask for now, of accounts without holds: one statement answers them, outside
        # a transaction. Any pending amount (a hold that may have expired) takes the full read.
        found, now_us = database.read_statement(
            lambda connection: store.read_balances_and_clock(connection, account_ids)
        )
        if all(_settled(found.get(account_id)) for account_id in account_ids):
            return [BalanceView(found[a][0], found[a][1], now_us) for a in account_ids]

    def work(connection: Connection, now_us: int) -> tuple[list[BalanceView], bool]:
        found = store.read_balances(connection, account_ids)
        missing = [account_id for account_id in account_ids if account_id not in found]
        if missing:
            raise NotFound("ACCOUNT_NOT_FOUND", f"account {missing[0]!r} does not exist", account_id=missing[0])
        if as_of_us is not None and as_of_us < now_us:
            past = store.balances_as_of(connection, account_ids, as_of_us)
            return [BalanceView(found[a][0], past[a], as_of_us) for a in account_ids], False
        # Only an account with a pending amount can have a hold to release: most have none.
        holding = [a for a in account_ids if found[a][1].debits_pending or found[a][1].credits_pending]
        released = store.expired_unresolved_amounts(connection, holding, now_us) if holding else {}
        views = [BalanceView(found[a][0], _current(found[a][1], released.get(a)), now_us) for a in account_ids]
        return views, bool(released)

    return _read_deciding_expiry(database, work)


def get_account(database: Database, account_id: str) -> BalanceView:
    return get_balances(database, [account_id], None)[0]


def list_accounts(database: Database, owner_id: str, kind: str, page_size: int, page_token: str):
    (after,) = decode_page_token(page_token, str) or ("",)

    def work(connection):
        found = store.list_accounts(connection, owner_id, kind, after, page_size + 1)
        more = len(found) > page_size
        found = found[:page_size]
        return found, encode_page_token(found[-1].id) if more else ""

    return database.read(work)


def _effective_hold_state(transfer: Transfer, now_us: int) -> Transfer:
    if (
        transfer.kind is Kind.PENDING
        and transfer.hold_state is HoldState.PENDING
        and transfer.expires_at_us is not None
        and transfer.expires_at_us <= now_us
    ):
        return replace(transfer, hold_state=HoldState.EXPIRED)
    return transfer


def _hold_expired_by_clock(transfer: Transfer, now_us: int) -> bool:
    return _effective_hold_state(transfer, now_us).hold_state is not transfer.hold_state


def get_transfers(database: Database, ids: list[str]) -> list[Transfer]:
    def work(connection: Connection, now_us: int) -> tuple[list[Transfer], bool]:
        found = store.get_transfers(connection, ids)
        stored = [found[i] for i in dict.fromkeys(ids) if i in found]
        decided = any(_hold_expired_by_clock(transfer, now_us) for transfer in stored)
        return [_effective_hold_state(transfer, now_us) for transfer in stored], decided

    return _read_deciding_expiry(database, work)


def list_entries(
    database: Database, account_id: str, start_us: int | None, end_us: int | None, page_size: int, page_token: str
):
    (before,) = decode_page_token(page_token, int) or (None,)
    if before is not None and before <= 0:
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this service issued")

    def work(connection: Connection, now_us: int):
        accounts = store.get_accounts(connection, [account_id])
        if account_id not in accounts:
            raise NotFound("ACCOUNT_NOT_FOUND", f"account {account_id!r} does not exist", account_id=account_id)
        rows = store.account_entries(connection, account_id, start_us, end_us, before, page_size + 1)
        more = len(rows) > page_size
        rows = rows[:page_size]
        views = [
            EntryView(
                _effective_hold_state(transfer, now_us),
                accounts[account_id],
                side,
                posted,
                pending,
                after,
                transfer.committed_at_us,
            )
            for transfer, side, posted, pending, after in rows
        ]
        token = encode_page_token(rows[-1][0].sequence) if more else ""
        decided = any(_hold_expired_by_clock(row[0], now_us) for row in rows)
        return (views, token), decided

    return _read_deciding_expiry(database, work)


def trial_balance(database: Database):
    def work(connection):
        return store.trial_balance(connection), store.last_sequence(connection)

    return database.read(work)


def activity_summary(
    database: Database,
    start_us: int,
    end_us: int,
    account_ids: list[str],
    owner_id: str,
    tier_bonus: bool = False,
    by_store: bool = False,
    original_time_bounds: list[int] | tuple[int, ...] = (),
):
    """The lines, and the highest commit sequence in the window (moving posted value or not)."""

    def work(connection):
        lines = store.activity_summary(
            connection, start_us, end_us, account_ids, owner_id, tier_bonus, by_store, original_time_bounds
        )
        return lines, store.last_sequence_in_window(connection, start_us, end_us, account_ids, owner_id)

    return database.read(work)


def transfers_after(database: Database, after_sequence: int, limit: int) -> list[Transfer]:
    return database.read(lambda connection: store.transfers_after(connection, after_sequence, limit))


def notices_after(database: Database, after_sequence: int, limit: int) -> list[ExpiryNotice]:
    return database.read(lambda connection: notice_store.notices_after(connection, after_sequence, limit))
