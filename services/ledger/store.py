"""Ledger storage: tables and the queries the use cases run (SQLAlchemy Core).

The journal (transfers, entries, hold_resolutions, transfer_failures) is append-only; the
database refuses UPDATE and DELETE on it (triggers in the first migration). account_balances
and open_holds are the only mutable tables: the running totals and the set of live holds.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY

from services.common import pg_dialect
from services.common.sql import OneTrip, Prepared, insert_many, json_insert
from services.ledger.limits import EXPIRED_HOLDS_PER_BATCH_MAX
from services.ledger.lots import ExpiryPolicy, PolicyKind
from services.ledger.model import (
    Account,
    Balance,
    Code,
    Failure,
    HoldState,
    Kind,
    Posting,
    RememberedFailure,
    Side,
    Transfer,
)

ID = String(160)  # caller ids are <= 128; system ids add a short prefix
metadata = MetaData()

currencies = Table(
    "currencies",
    metadata,
    Column("code", String(16), primary_key=True),
    Column("scale", SmallInteger, nullable=False),
    Column("owner_id", String(128), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("currency_code", String(16), nullable=False),
    Column("normal_side", SmallInteger, nullable=False),
    Column("no_overdraft", Boolean, nullable=False),
    Column("owner_id", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Index("accounts_owner_id", "owner_id", "id"),
    Index("accounts_kind", "kind", "id"),
)

account_balances = Table(
    "account_balances",
    metadata,
    Column("account_id", ID, primary_key=True),
    Column("normal_side", SmallInteger, nullable=False),
    Column("no_overdraft", Boolean, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
)

ledger_clock = Table(
    "ledger_clock",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("last_committed_at_us", BigInteger, nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("id", ID, nullable=False, unique=True),
    Column("debit_account_id", ID, nullable=False),
    Column("credit_account_id", ID, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency_code", String(16), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("code", SmallInteger, nullable=False),
    Column("pending_id", ID, nullable=True),
    Column("timeout_seconds", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=True),
    Column("reverses_transfer_id", ID, nullable=True),
    Column("partner_id", String(128), nullable=False),
    Column("store_id", String(128), nullable=False),
    Column("terminal_id", String(128), nullable=False),
    Column("receipt_id", String(128), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("committed_at_us", BigInteger, nullable=False),
    # The part of amount that is a tier bonus (migration 0003; older rows read 0).
    Column("tier_bonus_points", BigInteger, nullable=False, server_default="0"),
)

entries = Table(
    "entries",
    metadata,
    Column("account_id", ID, primary_key=True),
    Column("transfer_sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("side", SmallInteger, nullable=False),
    Column("code", SmallInteger, nullable=False),
    Column("posted_amount", BigInteger, nullable=False),
    Column("pending_change", BigInteger, nullable=False),
    Column("committed_at_us", BigInteger, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
)

open_holds = Table(
    "open_holds",
    metadata,
    Column("pending_id", ID, primary_key=True),
    Column("debit_account_id", ID, nullable=False),
    Column("credit_account_id", ID, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
)

hold_resolutions = Table(
    "hold_resolutions",
    metadata,
    Column("pending_id", ID, primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("resolving_transfer_id", ID, nullable=False),
    Column("resolved_at_us", BigInteger, nullable=False),
)

transfer_failures = Table(
    "transfer_failures",
    metadata,
    Column("id", ID, primary_key=True),
    Column("content", Text, nullable=False),
    Column("failure_reason", SmallInteger, nullable=False),
    Column("failure_field", String(64), nullable=False),
    Column("failure_message", Text, nullable=False),
    Column("failed_at_us", BigInteger, nullable=False),
)

_TRANSFER_COLUMNS = [c for c in transfers.c if c.name not in ("sequence", "committed_at_us")]


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _one_of(connection: Connection, column, values):
    """`column IN (values)`; on PostgreSQL one array parameter (= ANY), which stays cheap for
    the thousands of ids a batch references, where an expanded IN list costs milliseconds to render."""
    values = list(set(values))
    if is_postgres(connection):
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    return column.in_(values)


# Added to the clock. Always 0 in a service: there is no setting for it. Tests move it forward
# (monkeypatch) to see months pass, e.g. lots expiring; the clock stays non-decreasing per database.
clock_offset_us = 0


def clock_now_us(connection: Connection) -> int:
    """The ledger's clock: the database server's on PostgreSQL (shared by every ledger process)."""
    if is_postgres(connection):
        return connection.execute(
            text("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + :offset"),
            {"offset": clock_offset_us},
        ).scalar_one()
    return time.time_ns() // 1000 + clock_offset_us


# --- currencies and accounts -------------------------------------------------------------


def insert_currency(connection: Connection, code: str, scale: int, owner_id: str, now_us: int) -> None:
    connection.execute(currencies.insert().values(code=code, scale=scale, owner_id=owner_id, created_at_us=now_us))


def get_currency(connection: Connection, code: str):
    return connection.execute(select(currencies).where(currencies.c.code == code)).first()


def list_currencies(connection: Connection):
    return connection.execute(select(currencies).order_by(currencies.c.code)).all()


def currency_codes(connection: Connection, codes: Iterable[str]) -> set[str]:
    rows = connection.execute(select(currencies.c.code).where(currencies.c.code.in_(set(codes))))
    return {row.code for row in rows}


def _account_from_row(row) -> Account:
    return Account(
        id=row.id,
        currency_code=row.currency_code,
        normal_side=Side(row.normal_side),
        no_overdraft=row.no_overdraft,
        owner_id=row.owner_id,
        kind=row.kind,
        created_at_us=row.created_at_us,
    )


def get_accounts(connection: Connection, ids: Iterable[str]) -> dict[str, Account]:
    rows = connection.execute(select(accounts).where(_one_of(connection, accounts.c.id, ids)))
    return {row.id: _account_from_row(row) for row in rows}


def insert_accounts(connection: Connection, new_accounts: Sequence[Account], now_us: int) -> None:
    connection.execute(
        accounts.insert(),
        [
            {
                "id": a.id,
                "currency_code": a.currency_code,
                "normal_side": int(a.normal_side),
                "no_overdraft": a.no_overdraft,
                "owner_id": a.owner_id,
                "kind": a.kind,
                "created_at_us": now_us,
            }
            for a in new_accounts
        ],
    )
    connection.execute(
        account_balances.insert(),
        [
            {
                "account_id": a.id,
                "normal_side": int(a.normal_side),
                "no_overdraft": a.no_overdraft,
                "debits_posted": 0,
                "credits_posted": 0,
                "debits_pending": 0,
                "credits_pending": 0,
            }
            for a in new_accounts
        ],
    )


def list_accounts(connection: Connection, owner_id: str, kind: str, after_id: str, limit: int) -> list[Account]:
    query = select(accounts).order_by(accounts.c.id).limit(limit)
    if owner_id:
        query = query.where(accounts.c.owner_id == owner_id)
    if kind:
        query = query.where(accounts.c.kind == kind)
    if after_id:
        query = query.where(accounts.c.id > after_id)
    return [_account_from_row(row) for row in connection.execute(query)]


# --- balances ---------------------------------------------------------------------------------


def _balance_from_row(row) -> Balance:
    return Balance(row.debits_posted, row.credits_posted, row.debits_pending, row.credits_pending)


def lock_balances(connection: Connection, account_ids: Iterable[str]) -> tuple[dict[str, Account], dict[str, Balance]]:
    """Lock the accounts' balance rows in id order (so concurrent batches cannot deadlock). A
    batch on PostgreSQL locks them in `lock_and_read_batch`'s one round trip instead."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}, {}
    query = (
        select(accounts, account_balances)
        .join(account_balances, account_balances.c.account_id == accounts.c.id)
        .where(_one_of(connection, account_balances.c.account_id, ids))
        .order_by(account_balances.c.account_id)
    )
    if is_postgres(connection):
        query = query.with_for_update(of=account_balances)
    found_accounts: dict[str, Account] = {}
    found_balances: dict[str, Balance] = {}
    for row in connection.execute(query):
        found_accounts[row.id] = _account_from_row(row)
        found_balances[row.id] = _balance_from_row(row)
    return found_accounts, found_balances


def read_balances(connection: Connection, account_ids: Sequence[str]) -> dict[str, tuple[Account, Balance]]:
    query = (
        select(accounts, account_balances)
        .join(account_balances, account_balances.c.account_id == accounts.c.id)
        .where(_one_of(connection, accounts.c.id, account_ids))
    )
    return {row.id: (_account_from_row(row), _balance_from_row(row)) for row in connection.execute(query)}


def read_balances_and_clock(
    connection: Connection, account_ids: Sequence[str]
) -> tuple[dict[str, tuple[Account, Balance]], int]:
    """`read_balances` and the ledger's clock (`clock_now_us`) in one statement."""
    if not is_postgres(connection):
        return read_balances(connection, account_ids), clock_now_us(connection)
    # Every balance read runs this: plain SQL and tuples, as lock_balances.
    rows = connection.exec_driver_sql(
        _READ_BALANCES_AND_CLOCK_SQL, {"ids": list(set(account_ids)), "offset": clock_offset_us}
    ).all()
    if not rows:
        return {}, clock_now_us(connection)
    found = {
        row[0]: (Account(row[0], row[1], Side(row[2]), row[3], row[4], row[5], row[6]), Balance(*row[7:11]))
        for row in rows
    }
    return found, rows[0][11]


_READ_BALANCES_AND_CLOCK_SQL = (
    "SELECT a.id, a.currency_code, a.normal_side, a.no_overdraft, a.owner_id, a.kind, a.created_at_us, "
    "b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending, "
    "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint + %(offset)s "
    "FROM accounts AS a JOIN account_balances AS b ON b.account_id = a.id WHERE a.id = ANY(%(ids)s::varchar[])"
)


def expired_unresolved_amounts(connection: Connection, account_ids: Sequence[str], now_us: int) -> dict[str, Balance]:
    """Holds past their timeout that no batch has released yet, as pending amounts per account.

    Reads subtract them so an expired hold's amount is free the moment it expires, before the
    sweeper (or the next batch touching the account) writes the release.
    """
    ids = set(account_ids)
    query = (
        select(open_holds.c.debit_account_id, open_holds.c.credit_account_id, transfers.c.amount)
        .join(transfers, transfers.c.id == open_holds.c.pending_id)
        .where(open_holds.c.expires_at_us <= now_us)
        .where(
            or_(
                _one_of(connection, open_holds.c.debit_account_id, ids),
                _one_of(connection, open_holds.c.credit_account_id, ids),
            )
        )
    )
    released: dict[str, Balance] = {}
    for row in connection.execute(query):
        if row.debit_account_id in ids:
            released.setdefault(row.debit_account_id, Balance()).debits_pending += row.amount
        if row.credit_account_id in ids:
            released.setdefault(row.credit_account_id, Balance()).credits_pending += row.amount
    return released


def balances_as_of(connection: Connection, account_ids: Sequence[str], as_of_us: int) -> dict[str, Balance]:
    """Each account's balance after its last entry committed at or before `as_of_us`."""
    found: dict[str, Balance] = {}
    for account_id in account_ids:
        row = connection.execute(
            select(entries)
            .where(entries.c.account_id == account_id, entries.c.committed_at_us <= as_of_us)
            .order_by(entries.c.transfer_sequence.desc())
            .limit(1)
        ).first()
        balance = _balance_from_row(row) if row is not None else Balance()
        # Holds already past their timeout at `as_of_us` but released later (by a sweep or a batch)
        # were free at that time, as a read made then would have said.
        for side, amount in _expired_unreleased_at(connection, account_id, as_of_us):
            if side == Side.DEBIT:
                balance.debits_pending -= amount
            else:
                balance.credits_pending -= amount
        found[account_id] = balance
    return found


def _expired_unreleased_at(connection: Connection, account_id: str, as_of_us: int) -> list[tuple[int, int]]:
    query = (
        select(entries.c.side, transfers.c.amount)
        .join(transfers, transfers.c.sequence == entries.c.transfer_sequence)
        .outerjoin(hold_resolutions, hold_resolutions.c.pending_id == transfers.c.id)
        .where(entries.c.account_id == account_id, entries.c.committed_at_us <= as_of_us)
        .where(entries.c.pending_change > 0, transfers.c.expires_at_us <= as_of_us)
        .where(or_(hold_resolutions.c.resolved_at_us.is_(None), hold_resolutions.c.resolved_at_us > as_of_us))
    )
    return [(row[0], row[1]) for row in connection.execute(query)]


# --- transfers ----------------------------------------------------------------------------


def _transfer_from_row(row, hold_state: HoldState = HoldState.NONE) -> Transfer:
    return Transfer(
        id=row.id,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        currency_code=row.currency_code,
        kind=Kind(row.kind),
        code=row.code,
        pending_id=row.pending_id or "",
        timeout_seconds=row.timeout_seconds,
        expires_at_us=row.expires_at_us,
        reverses_transfer_id=row.reverses_transfer_id or "",
        partner_id=row.partner_id,
        store_id=row.store_id,
        terminal_id=row.terminal_id,
        receipt_id=row.receipt_id,
        member_id=row.member_id,
        tier_bonus_points=row.tier_bonus_points,
        sequence=row.sequence,
        committed_at_us=row.committed_at_us,
        hold_state=hold_state,
    )


def get_transfers(connection: Connection, ids: Iterable[str], with_hold_states: bool = True) -> dict[str, Transfer]:
    """Without `with_hold_states` a hold comes back with HoldState.NONE: for a caller that reads
    the states itself later, under its locks (one statement fewer)."""
    id_set = set(ids)
    if not id_set:
        return {}
    rows = connection.execute(select(transfers).where(_one_of(connection, transfers.c.id, id_set))).all()
    pending_ids = [row.id for row in rows if row.kind == Kind.PENDING] if with_hold_states else []
    states = hold_states(connection, pending_ids) if pending_ids else {}
    return {row.id: _transfer_from_row(row, states.get(row.id, HoldState.NONE)) for row in rows}


def hold_states(connection: Connection, pending_ids: Iterable[str]) -> dict[str, HoldState]:
    ids = set(pending_ids)
    if not ids:
        return {}
    states = {pid: HoldState.PENDING for pid in ids}
    resolved = connection.execute(
        select(hold_resolutions.c.pending_id, hold_resolutions.c.state).where(
            _one_of(connection, hold_resolutions.c.pending_id, ids)
        )
    )
    for row in resolved:
        states[row.pending_id] = HoldState(row.state)
    return states


_CLOCK_AND_EXPIRED_SQL = (
    "SELECT n.now_us, h.pending_id, h.debit_account_id, h.credit_account_id "
    "FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + %(offset)s AS now_us) AS n "
    "LEFT JOIN LATERAL (SELECT pending_id, debit_account_id, credit_account_id FROM open_holds "
    "WHERE expires_at_us <= n.now_us + %(horizon)s ORDER BY expires_at_us LIMIT %(limit)s) AS h ON true"
)


def clock_and_expired_holds(
    connection: Connection, account_ids: set[str] | None, limit: int, horizon_us: int = 0
) -> tuple[int, list[str]]:
    """The clock, and the holds that touch `account_ids` (all, if None) and expire by now + horizon.

    Expired holds wait at most a sweep interval, so there are few: one cheap range scan on
    expires_at plus a filter here beats an indexed OR over thousands of account ids. When the
    backlog is larger than `limit`, fall back to the precise per-account query.
    """
    if not is_postgres(connection):
        now_us = clock_now_us(connection)
        precise_limit = limit if account_ids is None else EXPIRED_HOLDS_PER_BATCH_MAX
        return now_us, expired_open_holds(connection, now_us + horizon_us, account_ids, precise_limit)
    rows = connection.exec_driver_sql(
        _CLOCK_AND_EXPIRED_SQL, {"limit": limit, "horizon": horizon_us, "offset": clock_offset_us}
    ).all()
    now_us = rows[0][0]
    holds = [row for row in rows if row[1] is not None]
    if account_ids is None:
        return now_us, sorted(row[1] for row in holds)
    if len(holds) >= limit:
        # A backlog: every expired hold on these accounts is released by this batch, so a spend
        # is never refused (and that refusal remembered) for a hold that has already expired.
        return now_us, expired_open_holds(connection, now_us + horizon_us, account_ids, EXPIRED_HOLDS_PER_BATCH_MAX)
    return now_us, sorted(row[1] for row in holds if row[2] in account_ids or row[3] in account_ids)


_KNOWN_IDS_SQL = (
    "SELECT id, 1 FROM transfers WHERE id = ANY(%(ids)s::varchar[])"
    " UNION ALL SELECT id, 2 FROM transfer_failures WHERE id = ANY(%(ids)s::varchar[])"
)


def known_ids(connection: Connection, ids: set[str]) -> tuple[set[str], set[str]]:
    """Which ids are committed transfers and which are remembered failures, in one statement."""
    if not ids:
        return set(), set()
    committed: set[str] = set()
    failed: set[str] = set()
    if is_postgres(connection):  # on every batch: plain SQL, no statement to build and cache-key
        for row in connection.exec_driver_sql(_KNOWN_IDS_SQL, {"ids": list(ids)}):
            (committed if row[1] == 1 else failed).add(row[0])
        return committed, failed
    query = union_all(
        select(transfers.c.id, literal(1).label("source")).where(_one_of(connection, transfers.c.id, ids)),
        select(transfer_failures.c.id, literal(2).label("source")).where(
            _one_of(connection, transfer_failures.c.id, ids)
        ),
    )
    for row in connection.execute(query):
        (committed if row[1] == 1 else failed).add(row[0])
    return committed, failed


def expired_open_holds(connection: Connection, now_us: int, account_ids: Iterable[str] | None, limit: int) -> list[str]:
    query = select(open_holds.c.pending_id).where(open_holds.c.expires_at_us <= now_us)
    if account_ids is not None:
        ids = set(account_ids)
        query = query.where(
            or_(
                _one_of(connection, open_holds.c.debit_account_id, ids),
                _one_of(connection, open_holds.c.credit_account_id, ids),
            )
        )
    # Oldest first: under a backlog the holds that expired longest ago are released first.
    query = query.order_by(open_holds.c.expires_at_us, open_holds.c.pending_id).limit(limit)
    return [row.pending_id for row in connection.execute(query)]


def reversed_totals(connection: Connection, original_ids: Iterable[str]) -> dict[str, int]:
    ids = set(original_ids)
    if not ids:
        return {}
    rows = connection.execute(
        select(transfers.c.reverses_transfer_id, func.sum(transfers.c.amount))
        .where(_one_of(connection, transfers.c.reverses_transfer_id, ids))
        .group_by(transfers.c.reverses_transfer_id)
    )
    return {row[0]: int(row[1]) for row in rows}


def remembered_failures(connection: Connection, ids: Iterable[str]) -> dict[str, RememberedFailure]:
    id_set = set(ids)
    rows = connection.execute(select(transfer_failures).where(_one_of(connection, transfer_failures.c.id, id_set)))
    return {
        row.id: RememberedFailure(
            json.loads(row.content), Failure(row.failure_reason), row.failure_field, row.failure_message
        )
        for row in rows
    }


def lock_clock(connection: Connection, shared: bool) -> None:
    """Order time-dependent decisions (is this hold expired?) in commit order.

    A batch takes the clock row exclusively before it reads the time and holds it to commit; a
    read that is about to report a hold EXPIRED takes it shared first. So the read waits for a
    batch that decided before the timeout (and then sees its post or void), and a batch that
    comes after the read reads a later time and sees the hold expired as well. On SQLite the
    batch's BEGIN IMMEDIATE and the read's write transaction hold the one database lock instead.
    """
    if is_postgres(connection):
        connection.execute(text(f"SELECT 1 FROM ledger_clock WHERE id = 1 FOR {'SHARE' if shared else 'UPDATE'}"))


@dataclass(frozen=True, slots=True)
class LockedClock:
    """The clock row as a batch found it under its lock, with the time read after the lock."""

    now_us: int
    last_sequence: int
    last_committed_at_us: int


def lock_clock_and_read_now(connection: Connection) -> LockedClock:
    """`lock_clock(shared=False)`, then the time and the row, in one round trip on PostgreSQL.

    An UPDATE computes RETURNING from the row it has locked, so the time is read after any wait
    for the lock (a SELECT ... FOR UPDATE may evaluate its target list before it waits). The
    update changes nothing: `advance_clock` writes the row later in the same transaction, and
    as the lock is held until commit, nobody else changes it in between.
    """
    if not is_postgres(connection):
        lock_clock(connection, shared=False)  # on SQLite the batch's BEGIN IMMEDIATE holds the lock
        row = connection.execute(_READ_CLOCK_ROW).one()
        return LockedClock(clock_now_us(connection), row[0], row[1])
    row = connection.execute(_LOCK_CLOCK_AND_READ_NOW, {"offset": clock_offset_us}).one()
    return LockedClock(row[0], row[1], row[2])


@dataclass(frozen=True, slots=True)
class LockedBatch:
    """What a batch reads under its locks: its accounts and their balances, the clock, and
    which of its item ids are already committed transfers or remembered failures."""

    accounts: dict[str, Account]
    balances: dict[str, Balance]
    clock: LockedClock
    committed_ids: set[str]
    failed_ids: set[str]
    hold_states: dict[str, HoldState]  # of the holds asked about: PENDING unless resolved
    # Each currency's expiry policy versions, oldest first: of every currency of `accounts`.
    policies: dict[str, list[ExpiryPolicy]]


# Locks first (balance rows in id order, then the clock row, as everywhere), and only then the
# read: each statement of one simple query takes its own snapshot under READ COMMITTED, so the
# read sees whatever the batches it waited for committed, and its clock_timestamp() is read
# after the waits. psycopg2 returns the last statement's rows only: the read is that one. The
# read's snapshot is newer than the locking statement's: a balance row committed while the
# lock waited is visible to the read but was not locked, so the read takes only the rows the
# lock named (kept in a transaction-local setting); any other is not found, as it was to the lock.
_NULLS = "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
# One row shape for every kind of row the read returns, told apart by its first column.
_READ_UNDER_LOCKS = " UNION ALL ".join(
    (
        "SELECT 0, a.id, a.currency_code, a.normal_side, a.no_overdraft, a.owner_id, a.kind, a.created_at_us,"
        " b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending, NULL::bigint"
        " FROM account_balances AS b JOIN accounts AS a ON a.id = b.account_id"
        " WHERE b.account_id = ANY(%(ids)s::varchar[]) AND b.account_id IN"
        " (SELECT json_array_elements_text(current_setting('coalition.locked_accounts')::json))",
        "SELECT 1, NULL, NULL, NULL, NULL, NULL, NULL,"
        " (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + %(offset)s,"
        " last_sequence, last_committed_at_us, NULL, NULL, NULL FROM ledger_clock WHERE id = 1",
        f"SELECT 2, id, {_NULLS} FROM transfers WHERE id = ANY(%(items)s::varchar[])",
        f"SELECT 3, id, {_NULLS} FROM transfer_failures WHERE id = ANY(%(items)s::varchar[])",
        "SELECT 4, pending_id, NULL, state, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        " FROM hold_resolutions WHERE pending_id = ANY(%(holds)s::varchar[])",
        # The expiry policies of the batch's currencies, read under the clock's lock as a new
        # policy is written under it (expiry_policies.set_policy): lots follow the one in force.
        "SELECT 5, currency_code, NULL, kind, NULL, NULL, NULL, effective_from_us, months, sweep_month,"
        " sweep_day, notice_days, created_at_us FROM expiry_policies"
        " WHERE currency_code IN (SELECT currency_code FROM accounts WHERE id = ANY(%(ids)s::varchar[]))",
    )
)
_LOCK_BATCH_SQL = (
    "SELECT set_config('coalition.locked_accounts', coalesce(json_agg(l.account_id)::text, '[]'), true)"
    " FROM (SELECT account_id FROM account_balances WHERE account_id = ANY(%(ids)s::varchar[])"
    " ORDER BY account_id FOR UPDATE) AS l;"
    " SELECT 1 FROM ledger_clock WHERE id = 1 FOR UPDATE; "
)
# Planning the read cost four times running it, on every batch: it is planned once per connection.
_READ_UNDER_LOCKS_PREPARED = Prepared(
    "ledger_read_under_locks",
    _READ_UNDER_LOCKS.replace("::varchar[]", ""),
    {"ids": "varchar[]", "items": "varchar[]", "holds": "varchar[]", "offset": "bigint"},
)


def lock_and_read_batch(
    connection: Connection, account_ids: Iterable[str], item_ids: set[str], hold_ids: set[str]
) -> LockedBatch:
    """`lock_balances`, `lock_clock_and_read_now`, `known_ids`, `hold_states(hold_ids)` and the
    accounts' currencies' expiry policies, in that order: one round trip on PostgreSQL, where a
    batch holds its locks from here to commit."""
    if not is_postgres(connection):
        accounts, balances = lock_balances(connection, account_ids)
        clock = lock_clock_and_read_now(connection)
        committed_ids, failed_ids = known_ids(connection, item_ids)
        states = hold_states(connection, hold_ids)
        from services.ledger.lot_store import policies_of  # lot_store builds on this module

        policies = policies_of(connection, {account.currency_code for account in accounts.values()})
        return LockedBatch(accounts, balances, clock, committed_ids, failed_ids, states, policies)
    parameters = {
        "ids": sorted(set(account_ids)),
        "items": list(item_ids),
        "holds": list(hold_ids),
        "offset": clock_offset_us,
    }
    found_accounts: dict[str, Account] = {}
    found_balances: dict[str, Balance] = {}
    committed_ids: set[str] = set()
    failed_ids: set[str] = set()
    states = dict.fromkeys(hold_ids, HoldState.PENDING)
    policies: dict[str, list[ExpiryPolicy]] = {}
    clock = None
    statement = _LOCK_BATCH_SQL + _READ_UNDER_LOCKS_PREPARED.text(connection)
    for row in connection.exec_driver_sql(statement, parameters):
        source = row[0]
        if source == 0:
            found_accounts[row[1]] = Account(row[1], row[2], Side(row[3]), row[4], row[5], row[6], row[7])
            found_balances[row[1]] = Balance(row[8], row[9], row[10], row[11])
        elif source == 1:
            clock = LockedClock(row[7], row[8], row[9])
        elif source == 4:
            states[row[1]] = HoldState(row[3])
        elif source == 5:
            policies.setdefault(row[1], []).append(
                ExpiryPolicy(row[1], row[7], PolicyKind(row[3]), row[8], row[9], row[10], row[11], row[12])
            )
        else:
            (committed_ids if source == 2 else failed_ids).add(row[1])
    if clock is None:
        raise RuntimeError("the ledger_clock row is missing: the first migration creates it")
    for versions in policies.values():
        versions.sort(key=lambda policy: policy.effective_from_us)
    return LockedBatch(found_accounts, found_balances, clock, committed_ids, failed_ids, states, policies)


def clock_after_last_commit_us(connection: Connection) -> int:
    """The clock, but never at or before the last batch's commit time: a commit time never goes
    back (advance_clock) when the clock does. Read under the clock row's lock, it is a time no
    batch has committed at yet."""
    last_committed_at_us = connection.execute(_READ_CLOCK_ROW).one()[1]
    return max(clock_now_us(connection), last_committed_at_us + 1)


# Statements of every batch, built once (a text() parses its SQL for binds when made).
_LOCK_CLOCK_AND_READ_NOW = text(
    "UPDATE ledger_clock SET last_sequence = last_sequence WHERE id = 1 "
    "RETURNING (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + :offset, "
    "last_sequence, last_committed_at_us"
)
_READ_CLOCK_ROW = text("SELECT last_sequence, last_committed_at_us FROM ledger_clock WHERE id = 1")
_ADVANCE_CLOCK = "UPDATE ledger_clock SET last_sequence = %(last)s, last_committed_at_us = %(at)s WHERE id = 1"
_ADVANCE_CLOCK_STATEMENT = text(
    "UPDATE ledger_clock SET last_sequence = :last, last_committed_at_us = :at WHERE id = 1"
)


def advance_clock(
    connection: Connection, clock: LockedClock, count: int, trip: OneTrip | None = None
) -> tuple[int, int]:
    """Reserve `count` commit sequence numbers and the commit time, in commit order: the first
    sequence and the time. The write goes with `trip` when there is one.

    The single clock row is locked from `lock_clock_and_read_now` until this transaction
    commits, so sequences become visible in order with no gap (a follower never skips a
    later-committing smaller number), and the time never goes back.
    """
    last = clock.last_sequence + count
    at = max(clock.last_committed_at_us, clock.now_us)
    if trip is not None:
        trip.add(_ADVANCE_CLOCK, {"last": last, "at": at})
    else:
        connection.execute(_ADVANCE_CLOCK_STATEMENT, {"last": last, "at": at})
    return clock.last_sequence + 1, at


_TRANSFER_INSERT_COLUMNS = (
    "sequence",
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "currency_code",
    "kind",
    "code",
    "pending_id",
    "timeout_seconds",
    "expires_at_us",
    "reverses_transfer_id",
    "partner_id",
    "store_id",
    "terminal_id",
    "receipt_id",
    "member_id",
    "committed_at_us",
    "tier_bonus_points",
)
_ENTRY_INSERT_COLUMNS = (
    "account_id",
    "transfer_sequence",
    "side",
    "code",
    "posted_amount",
    "pending_change",
    "committed_at_us",
    "debits_posted",
    "credits_posted",
    "debits_pending",
    "credits_pending",
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_NULL = "\\N"


def _copy_text(value: str | None) -> str:
    return _NULL if value is None else value.translate(_COPY_ESCAPES)


def _copy_lines(table: Table, rows: list[tuple]) -> str:
    # Ids are validated to a safe alphabet and numbers need no escaping; only free text is escaped.
    if table is transfers:
        return "".join(
            f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{r[5]}\t{r[6]}\t{r[7]}\t{_copy_text(r[8])}\t{r[9]}\t"
            f"{_NULL if r[10] is None else r[10]}\t{_copy_text(r[11])}\t{_copy_text(r[12])}\t{_copy_text(r[13])}\t"
            f"{_copy_text(r[14])}\t{_copy_text(r[15])}\t{_copy_text(r[16])}\t{r[17]}\t{r[18]}\n"
            for r in rows
        )
    return "".join("\t".join(map(str, row)) + "\n" for row in rows)


# From this many transfers a batch's rows go by COPY, two round trips per table; below it, the
# transfers and their entries go as one JSON statement, one round trip for both, which costs a
# small batch (the till's) less.
COPY_TRANSFERS_MIN = 256


def _insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    """Bulk insert: COPY on PostgreSQL (the batch write path's biggest cost), executemany elsewhere."""
    if not rows:
        return
    if is_postgres(connection):
        buffer = io.StringIO(_copy_lines(table, rows))
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        dbapi_connection = connection.connection.dbapi_connection
        cursor = dbapi_connection.cursor()
        try:
            pg_dialect.send_due_begin(dbapi_connection)  # COPY goes on the driver's own cursor, past the dialect
            cursor.copy_expert(statement, buffer)
        except dbapi_connection.Error as error:
            # The driver's own error, as SQLAlchemy would have wrapped it (IntegrityError,
            # OperationalError, ...): the transaction's retry and the batcher's fallbacks tell
            # failures apart by those classes. A lost connection is invalidated, as SQLAlchemy
            # does for its own statements, so it never goes back to the pool and the unit is retried.
            lost = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
            if lost:
                connection.invalidate()
            raise sa_exc.DBAPIError.instance(
                statement, None, error, dbapi_connection.Error, connection_invalidated=lost
            ) from error
        finally:
            cursor.close()
        return
    connection.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def _update_balances(
    connection: Connection, trip: OneTrip | None, balances: dict[str, Balance], account_ids: list[str]
) -> None:
    if not account_ids:
        return
    if is_postgres(connection):
        # One statement for the whole batch: every touched balance row is written exactly once.
        (connection.exec_driver_sql if trip is None else trip.add)(
            "UPDATE account_balances AS b SET debits_posted = v.dp, credits_posted = v.cp, "
            "debits_pending = v.dpe, credits_pending = v.cpe "
            "FROM unnest(%(ids)s::varchar[], %(dp)s::bigint[], %(cp)s::bigint[], %(dpe)s::bigint[], "
            "%(cpe)s::bigint[]) AS v(id, dp, cp, dpe, cpe) WHERE b.account_id = v.id",
            {
                "ids": account_ids,
                "dp": [balances[a].debits_posted for a in account_ids],
                "cp": [balances[a].credits_posted for a in account_ids],
                "dpe": [balances[a].debits_pending for a in account_ids],
                "cpe": [balances[a].credits_pending for a in account_ids],
            },
        )
        return
    connection.execute(
        _UPDATE_BALANCE,
        [
            {
                "b_account_id": a,
                "b_debits_posted": balances[a].debits_posted,
                "b_credits_posted": balances[a].credits_posted,
                "b_debits_pending": balances[a].debits_pending,
                "b_credits_pending": balances[a].credits_pending,
            }
            for a in account_ids
        ],
    )


def write_batch(
    connection: Connection,
    postings: Sequence[Posting],
    failures: Sequence[tuple[str, RememberedFailure]],
    balances: dict[str, Balance],
    touched: Iterable[str],
    first_sequence: int,
    committed_at_us: int,
    trip: OneTrip | None = None,
) -> list[Transfer]:
    """Write a decided batch: through `trip` (one_trip_for), or statement by statement."""
    committed: list[Transfer] = []
    transfer_rows: list[tuple] = []
    entry_rows: list[tuple] = []
    new_holds = []
    resolved_holds = []
    for offset, posting in enumerate(postings):
        sequence = first_sequence + offset
        t = posting.transfer
        transfer_rows.append(
            (
                sequence,
                t.id,
                t.debit_account_id,
                t.credit_account_id,
                t.amount,
                t.currency_code,
                int(t.kind),
                t.code,
                t.pending_id or None,
                t.timeout_seconds,
                t.expires_at_us,
                t.reverses_transfer_id or None,
                t.partner_id,
                t.store_id,
                t.terminal_id,
                t.receipt_id,
                t.member_id,
                committed_at_us,
                t.tier_bonus_points,
            )
        )
        for account_id, side, after in (
            (t.debit_account_id, 1, posting.debit_after),
            (t.credit_account_id, 2, posting.credit_after),
        ):
            entry_rows.append(
                (
                    account_id,
                    sequence,
                    side,
                    t.code,
                    posting.posted_amount,
                    posting.pending_change,
                    committed_at_us,
                    after.debits_posted,
                    after.credits_posted,
                    after.debits_pending,
                    after.credits_pending,
                )
            )
        if t.kind is Kind.PENDING:
            new_holds.append(
                {
                    "pending_id": t.id,
                    "debit_account_id": t.debit_account_id,
                    "credit_account_id": t.credit_account_id,
                    "expires_at_us": t.expires_at_us,
                }
            )
        elif t.kind in _HOLD_STATE_OF_KIND:
            resolved_holds.append(
                {
                    "pending_id": t.pending_id,
                    "state": int(_HOLD_STATE_OF_KIND[t.kind]),
                    "resolving_transfer_id": t.id,
                    "resolved_at_us": committed_at_us,
                }
            )
        t.sequence = sequence
        t.committed_at_us = committed_at_us
        committed.append(t)
    if trip is not None:
        for table, columns, rows in (
            (transfers, _TRANSFER_INSERT_COLUMNS, transfer_rows),
            (entries, _ENTRY_INSERT_COLUMNS, entry_rows),
        ):
            insert_rows(connection, trip, table, [dict(zip(columns, row, strict=True)) for row in rows])
    else:
        _insert_rows(connection, transfers, _TRANSFER_INSERT_COLUMNS, transfer_rows)
        _insert_rows(connection, entries, _ENTRY_INSERT_COLUMNS, entry_rows)
    insert_rows(connection, trip, open_holds, new_holds)
    if resolved_holds:
        insert_rows(connection, trip, hold_resolutions, resolved_holds)
        pending_ids = [h["pending_id"] for h in resolved_holds]
        if trip is not None:
            trip.add("DELETE FROM open_holds WHERE pending_id = ANY(%(ids)s::varchar[])", {"ids": pending_ids})
        else:
            connection.execute(_DELETE_OPEN_HOLDS, {"pending_ids": pending_ids})
    if failures:
        insert_rows(
            connection,
            trip,
            transfer_failures,
            [
                {
                    "id": transfer_id,
                    "content": json.dumps(failure.content, sort_keys=True),
                    "failure_reason": int(failure.failure),
                    "failure_field": failure.failure_field,
                    "failure_message": failure.failure_message,
                    "failed_at_us": committed_at_us,
                }
                for transfer_id, failure in failures
            ],
        )
    _update_balances(connection, trip, balances, sorted(touched))
    return committed


def one_trip_for(connection: Connection, transfer_count: int) -> OneTrip | None:
    """Where a batch's writes go: a small batch (a till's) gathers them and sends them in one
    round trip once the batch's last read is made; a big one copies its rows (COPY_TRANSFERS_MIN)."""
    if is_postgres(connection) and transfer_count < COPY_TRANSFERS_MIN:
        return OneTrip(connection)
    return None


def insert_rows(connection: Connection, trip: OneTrip | None, table: Table, rows: list[dict]) -> None:
    """insert_many, or its statement added to `trip`."""
    if not rows:
        return
    if trip is not None:
        trip.add(*json_insert(table, rows))
    else:
        insert_many(connection, table, rows)


_DELETE_OPEN_HOLDS = open_holds.delete().where(open_holds.c.pending_id.in_(bindparam("pending_ids", expanding=True)))

_HOLD_STATE_OF_KIND = {
    Kind.POST_PENDING: HoldState.POSTED,
    Kind.VOID_PENDING: HoldState.VOIDED,
    Kind.EXPIRE_PENDING: HoldState.EXPIRED,
}

_UPDATE_BALANCE = (
    update(account_balances)
    .where(account_balances.c.account_id == bindparam("b_account_id"))
    .values(
        debits_posted=bindparam("b_debits_posted"),
        credits_posted=bindparam("b_credits_posted"),
        debits_pending=bindparam("b_debits_pending"),
        credits_pending=bindparam("b_credits_pending"),
    )
)


# --- reads over the journal ------------------------------------------------------------------


def transfers_after(connection: Connection, after_sequence: int, limit: int) -> list[Transfer]:
    rows = connection.execute(
        select(transfers).where(transfers.c.sequence > after_sequence).order_by(transfers.c.sequence).limit(limit)
    ).all()
    states = hold_states(connection, [row.id for row in rows if row.kind == Kind.PENDING])
    return [_transfer_from_row(row, states.get(row.id, HoldState.NONE)) for row in rows]


def account_entries(
    connection: Connection,
    account_id: str,
    start_us: int | None,
    end_us: int | None,
    before_sequence: int | None,
    limit: int,
):
    query = (
        select(entries, transfers)
        .join(transfers, transfers.c.sequence == entries.c.transfer_sequence)
        .where(entries.c.account_id == account_id)
        .order_by(entries.c.transfer_sequence.desc())
        .limit(limit)
    )
    if start_us is not None:
        query = query.where(entries.c.committed_at_us >= start_us)
    if end_us is not None:
        query = query.where(entries.c.committed_at_us < end_us)
    if before_sequence is not None:
        query = query.where(entries.c.transfer_sequence < before_sequence)
    result = []
    rows = connection.execute(query).all()
    pending_ids = [row._mapping[transfers.c.id] for row in rows if row._mapping[transfers.c.kind] == Kind.PENDING]
    states = hold_states(connection, pending_ids)
    for row in rows:
        mapping = row._mapping
        balance_after = Balance(
            mapping[entries.c.debits_posted],
            mapping[entries.c.credits_posted],
            mapping[entries.c.debits_pending],
            mapping[entries.c.credits_pending],
        )
        transfer = _transfer_from_row(_TransferView(mapping), states.get(mapping[transfers.c.id], HoldState.NONE))
        result.append(
            (
                transfer,
                Side(mapping[entries.c.side]),
                mapping[entries.c.posted_amount],
                mapping[entries.c.pending_change],
                balance_after,
            )
        )
    return result


class _TransferView:
    """Attribute access to the transfers columns of a joined row."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str):
        return self._mapping[transfers.c[name]]


def trial_balance(connection: Connection):
    query = (
        select(
            accounts.c.currency_code,
            func.coalesce(func.sum(account_balances.c.debits_posted), 0),
            func.coalesce(func.sum(account_balances.c.credits_posted), 0),
            func.coalesce(func.sum(account_balances.c.debits_pending), 0),
            func.coalesce(func.sum(account_balances.c.credits_pending), 0),
            func.count(),
        )
        .join(account_balances, account_balances.c.account_id == accounts.c.id)
        .group_by(accounts.c.currency_code)
        .order_by(accounts.c.currency_code)
    )
    return [tuple(int(v) if i else v for i, v in enumerate(row)) for row in connection.execute(query)]


def last_sequence(connection: Connection) -> int:
    return connection.execute(select(ledger_clock.c.last_sequence).where(ledger_clock.c.id == 1)).scalar_one()


def _entry_filters(connection: Connection, query, account_ids: Sequence[str], owner_id: str):
    if account_ids:
        query = query.where(_one_of(connection, entries.c.account_id, account_ids))
    if owner_id:
        query = query.where(entries.c.account_id.in_(select(accounts.c.id).where(accounts.c.owner_id == owner_id)))
    return query


def last_sequence_in_window(
    connection: Connection, start_us: int, end_us: int, account_ids: Sequence[str], owner_id: str
) -> int:
    query = select(func.max(entries.c.transfer_sequence)).where(
        entries.c.committed_at_us >= start_us, entries.c.committed_at_us < end_us
    )
    return int(connection.execute(_entry_filters(connection, query, account_ids, owner_id)).scalar() or 0)


def index_expression(value, starts: list[int]):
    """SQL for i such that starts[i] <= value < starts[i + 1] (value within [starts[0], starts[-1])):
    a balanced tree of CASEs, so each row takes log2(len(starts)) comparisons."""

    def between(low: int, high: int):
        if high - low == 1:
            return literal(low, BigInteger)
        middle = (low + high) // 2
        return case((value < literal(starts[middle], BigInteger), between(low, middle)), else_=between(middle, high))

    return between(0, len(starts) - 1)


# Codes whose transfers may carry a tier bonus (EARN, and the REVERSAL of an earn): only their
# entries look up their transfer's row, so the aggregate of every other code reads entries alone.
_TIER_BONUS_CODES = (int(Code.EARN), int(Code.REVERSAL))


def activity_summary(
    connection: Connection,
    start_us: int,
    end_us: int,
    account_ids: Sequence[str],
    owner_id: str,
    tier_bonus: bool = False,
    by_store: bool = False,
    original_time_bounds: Sequence[int] = (),
):
    """Posted debits, credits, transfer count and (with `tier_bonus`) tier bonus points per account
    and code, in one aggregate: the bonus is the sum of transfers.tier_bonus_points over the
    entries counted. Without it the entries alone answer (about three times faster over a month
    of earns on PostgreSQL), and the bonus reads 0.

    With `original_time_bounds` (ascending), REVERSAL entries are grouped also by
    `reversal_original_window`: how many bounds are at or before the commit time of the transfer
    each reverses (found by its unique id); 0 for every other entry. Only REVERSAL entries look
    up their transfer and its original, so the aggregate of earns is unchanged.

    With `by_store` the groups are per transfers.store_id instead (every entry joins its transfer;
    still one grouped query), and reversals are not split."""
    if by_store:
        return _activity_by_store(connection, start_us, end_us, account_ids, owner_id, tier_bonus)
    bounds = list(original_time_bounds)
    joined_codes = [*(_TIER_BONUS_CODES if tier_bonus else ()), *((int(Code.REVERSAL),) if bounds else ())]
    source = entries
    if joined_codes:
        source = source.outerjoin(
            transfers,
            (transfers.c.sequence == entries.c.transfer_sequence) & entries.c.code.in_(sorted(set(joined_codes))),
        )
    window = literal(0, Integer)
    if bounds:
        original = transfers.alias("original")
        source = source.outerjoin(original, original.c.id == transfers.c.reverses_transfer_id)
        # index_expression never compares with its first and last starts: they only close the range.
        starts = [-1, *bounds, 2**63 - 1]
        window = case(
            (original.c.committed_at_us.is_(None), literal(0, Integer)),
            else_=index_expression(original.c.committed_at_us, starts),
        )
    detail = (
        select(
            entries.c.account_id,
            entries.c.code,
            entries.c.side,
            entries.c.posted_amount,
            entries.c.transfer_sequence,
            (transfers.c.tier_bonus_points if tier_bonus else literal(0, BigInteger)).label("tier_bonus_points"),
            window.label("reversal_original_window"),
        )
        .select_from(source)
        .where(entries.c.committed_at_us >= start_us, entries.c.committed_at_us < end_us)
        .where(entries.c.posted_amount > 0)
    )
    detail = _entry_filters(connection, detail, account_ids, owner_id).subquery("detail")
    debits = func.sum(detail.c.posted_amount).filter(detail.c.side == int(Side.DEBIT))
    credits = func.sum(detail.c.posted_amount).filter(detail.c.side == int(Side.CREDIT))
    summary = (
        select(
            detail.c.account_id,
            detail.c.code,
            detail.c.reversal_original_window,
            func.coalesce(debits, 0).label("debits_posted"),
            func.coalesce(credits, 0).label("credits_posted"),
            func.count().label("transfer_count"),
            func.max(detail.c.transfer_sequence).label("last_sequence"),
            func.coalesce(func.sum(detail.c.tier_bonus_points), 0).label("tier_bonus_points"),
        )
        .group_by(detail.c.account_id, detail.c.code, detail.c.reversal_original_window)
        .subquery()
    )
    query = (
        select(summary, accounts.c.currency_code, accounts.c.owner_id, accounts.c.kind)
        .join(accounts, accounts.c.id == summary.c.account_id)
        .order_by(summary.c.account_id, summary.c.code, summary.c.reversal_original_window)
    )
    return connection.execute(query).all()


def _activity_by_store(
    connection: Connection, start_us: int, end_us: int, account_ids: Sequence[str], owner_id: str, tier_bonus: bool
):
    """activity_summary grouped by account, code and the transfer's store: one aggregate."""
    debits = func.sum(entries.c.posted_amount).filter(entries.c.side == int(Side.DEBIT))
    credits = func.sum(entries.c.posted_amount).filter(entries.c.side == int(Side.CREDIT))
    bonus = func.coalesce(func.sum(transfers.c.tier_bonus_points), 0) if tier_bonus else literal(0)
    inner = (
        select(
            entries.c.account_id,
            entries.c.code,
            transfers.c.store_id,
            func.coalesce(debits, 0).label("debits_posted"),
            func.coalesce(credits, 0).label("credits_posted"),
            func.count().label("transfer_count"),
            bonus.label("tier_bonus_points"),
        )
        .select_from(entries.join(transfers, transfers.c.sequence == entries.c.transfer_sequence))
        .where(entries.c.committed_at_us >= start_us, entries.c.committed_at_us < end_us)
        .where(entries.c.posted_amount > 0)
        .group_by(entries.c.account_id, entries.c.code, transfers.c.store_id)
    )
    summary = _entry_filters(connection, inner, account_ids, owner_id).subquery()
    query = (
        select(summary, accounts.c.currency_code, accounts.c.owner_id, accounts.c.kind)
        .join(accounts, accounts.c.id == summary.c.account_id)
        .order_by(summary.c.account_id, summary.c.code, summary.c.store_id)
    )
    return connection.execute(query).all()
