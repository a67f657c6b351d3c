"""Query shapes that both databases answer from an index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from sqlalchemy import ColumnElement, Connection, Table, and_, insert


def pairs_in(first: ColumnElement, second: ColumnElement, pairs: Iterable[tuple]) -> ColumnElement[bool]:
    """Matches at least the rows whose (first, second) is one of `pairs`, in a form both SQLite
    and PostgreSQL look up in a composite index on (first, second). A row-value IN list, the
    obvious form, makes SQLite scan the whole table (90 ms at 100,000 rows, per batch). It may
    also match a first of one pair with the second of another: callers keep the exact pairs."""
    pairs = list(pairs)
    return and_(first.in_(sorted({a for a, _ in pairs})), second.in_(sorted({b for _, b in pairs})))


def insert_many(connection: Connection, table: Table, rows: Sequence[dict]) -> None:
    """Insert rows (dicts with the same keys) in one statement. On PostgreSQL the values travel
    as one array per column through `unnest`: psycopg2 adapts a list in C, where SQLAlchemy's
    multi-row VALUES builds and binds every row's parameters in Python (a batch write's largest
    cost in partners). Errors come wrapped as SQLAlchemy's, as with any statement."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), list(rows))
        return
    columns = tuple(rows[0])
    parameters = {f"c{index}": [row[column] for row in rows] for index, column in enumerate(columns)}
    connection.exec_driver_sql(_unnest_insert(table, columns, connection.dialect), parameters)


@lru_cache(maxsize=64)
def _unnest_insert(table: Table, columns: tuple[str, ...], dialect) -> str:
    arrays = ", ".join(
        f"%(c{index})s::{table.c[column].type.compile(dialect=dialect)}[]" for index, column in enumerate(columns)
    )
    return f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
