"""The rows the recovery pass finishes, one shape for every kind: which rows are unfinished,
which of them are due, and the claim that counts an attempt before it is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Column, ColumnElement, Connection, Row, Table, and_, func, select, update

from services.partners.store.tables import (
    conversions,
    earns,
    redemptions,
    returns,
    unfinished_predicate,
)


@dataclass(frozen=True, slots=True)
class Unfinished:
    table: Table
    id_column: Column
    # The row's clock: how old it must be (or how far past its expiry) before the pass takes it.
    since: Column


KINDS = {
    "earn": Unfinished(earns, earns.c.earn_id, earns.c.create_time_us),
    "return": Unfinished(returns, returns.c.return_id, returns.c.create_time_us),
    "conversion": Unfinished(conversions, conversions.c.conversion_id, conversions.c.create_time_us),
    "hold": Unfinished(redemptions, redemptions.c.redemption_id, redemptions.c.expire_time_us),
}


def _unfinished(kind: Unfinished) -> ColumnElement[bool]:
    # The very text of the index's predicate, values and all: a planner uses a partial index
    # only where it can prove the query's condition implies it, and SQLite cannot through
    # bound parameters.
    return unfinished_predicate(kind.table.name)


def backlog(connection: Connection, kind: str, since_before_us: int) -> int:
    """How many unfinished rows of a kind are older than `since_before_us` (due now or backing off)."""
    unfinished = KINDS[kind]
    query = select(func.count()).where(and_(_unfinished(unfinished), unfinished.since < since_before_us))
    return connection.execute(query).scalar_one()


def due(connection: Connection, kind: str, since_before_us: int, now_us: int, limit: int) -> Sequence[Row]:
    """Unfinished rows of a kind whose clock passed `since_before_us` and whose next attempt is
    due; earliest due first (rows never tried before any other), then oldest."""
    unfinished = KINDS[kind]
    table = unfinished.table
    query = (
        select(table)
        .where(and_(_unfinished(unfinished), unfinished.since < since_before_us, table.c.next_recovery_us <= now_us))
        .order_by(table.c.next_recovery_us, unfinished.since, unfinished.id_column)
        .limit(limit)
    )
    return connection.execute(query).all()


def claim(connection: Connection, kind: str, row: Row, next_recovery_us: int) -> Row | None:
    """Count an attempt on a row before making it; the row as it is now, or None. Only the
    claim that still sees the row unfinished with the attempts it read succeeds, so two
    partners processes never work on the same row in the same turn, and a process killed
    mid-attempt has still counted it."""
    unfinished = KINDS[kind]
    table = unfinished.table
    query = (
        update(table)
        .where(
            and_(
                unfinished.id_column == row._mapping[unfinished.id_column.name],
                _unfinished(unfinished),
                table.c.recovery_attempts == row.recovery_attempts,
            )
        )
        .values(recovery_attempts=row.recovery_attempts + 1, next_recovery_us=next_recovery_us)
        .returning(*table.c)
    )
    return connection.execute(query).first()


def uncount(connection: Connection, kind: str, row: Row, next_recovery_us: int) -> None:
    """Take back a claimed attempt that did not count against the row (the ledger was away, or
    it is too early to tell), and set when to try again. Only while nothing else claimed it."""
    unfinished = KINDS[kind]
    table = unfinished.table
    connection.execute(
        update(table)
        .where(
            and_(
                unfinished.id_column == row._mapping[unfinished.id_column.name],
                _unfinished(unfinished),
                table.c.recovery_attempts == row.recovery_attempts,
            )
        )
        .values(recovery_attempts=row.recovery_attempts - 1, next_recovery_us=next_recovery_us)
    )


def attempts_of(connection: Connection, kind: str, row_id: str) -> Row | None:
    """A row's recovery bookkeeping: (state, recovery_attempts, next_recovery_us)."""
    unfinished = KINDS[kind]
    table = unfinished.table
    query = select(table.c.state, table.c.recovery_attempts, table.c.next_recovery_us).where(
        unfinished.id_column == row_id
    )
    return connection.execute(query).first()
