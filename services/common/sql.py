"""Statement shapes the services share: lookups both databases answer from an index, batch writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import orjson
from sqlalchemy import ColumnElement, Connection, Row, Table, and_, bindparam, insert, select, update
from sqlalchemy.dialects import sqlite


def pairs_in(first: ColumnElement, second: ColumnElement, pairs: Iterable[tuple]) -> ColumnElement[bool]:
    """Matches at least the rows whose (first, second) is one of `pairs`, in a form both SQLite
    and PostgreSQL look up in a composite index on (first, second). A row-value IN list, the
    obvious form, makes SQLite scan the whole table (90 ms at 100,000 rows, per batch). It may
    also match a first of one pair with the second of another: callers keep the exact pairs."""
    pairs = list(pairs)
    return and_(first.in_(sorted({a for a, _ in pairs})), second.in_(sorted({b for _, b in pairs})))


def insert_many(connection: Connection, table: Table, rows: Sequence[dict]) -> None:
    """Insert rows (dicts with the same keys) in one statement. On PostgreSQL the rows travel as
    one JSON text through `json_populate_recordset`: orjson renders a batch in microseconds, and
    the driver quotes one string, where adapting an array per column costs psycopg2 a few
    microseconds per value with the GIL held, and SQLAlchemy's multi-row VALUES binds every
    row's parameters in Python. Values must be JSON's (str, int, bool, None). Errors come
    wrapped as SQLAlchemy's, as with any statement."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), list(rows))
        return
    connection.exec_driver_sql(*json_insert(table, rows))


def json_insert(table: Table, rows: Sequence[dict]) -> tuple[str, dict]:
    """insert_many's PostgreSQL statement and its parameters, for a OneTrip."""
    return _json_insert(table, tuple(rows[0])), {"rows": orjson.dumps(rows).decode()}


class OneTrip:
    """Write statements of one PostgreSQL transaction sent together, in order, as one string:
    one round trip where each would have been one. psycopg2 interpolates parameters on the
    client and the simple query protocol runs a semicolon-separated string in the open
    transaction, failing at the first statement that fails (the transaction is then aborted,
    as after any failed statement). Only statements whose results nobody reads belong here."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._cursor = connection.connection.dbapi_connection.cursor()
        self._statements: list[bytes] = []

    def add(self, statement: str, parameters: dict) -> None:
        self._statements.append(self._cursor.mogrify(statement, parameters))

    def send(self) -> None:
        statements, self._statements = self._statements, []
        if statements:
            # Already interpolated: the driver's own pass must leave every % as it is, and a
            # non-empty mapping makes it take `%%` back to `%` rather than read the text as a tuple.
            text = b";".join(statements).decode().replace("%", "%%")
            self._connection.exec_driver_sql(text, {"interpolated": True})


class Prepared:
    """A PostgreSQL statement planned once per connection, not on every run.

    psycopg2 sends every statement as text, which PostgreSQL parses and plans each time. For a
    statement that is cheap to run but costly to plan (a UNION of several lookups), planning is
    most of its cost: the ledger's read under a batch's locks took 0.8 ms to plan (1.6 to 2.7 ms
    under load) and 0.2 ms to run. `text()` gives an `EXECUTE` of the statement, to send like any
    other (alone or last in a multi-statement string), and prepares it first on a connection that
    has not got it. A prepared statement outlives the transaction that prepared it, even a rolled
    back one, and lives as long as the connection; a session that lost it (a pooler's DEALLOCATE
    ALL) fails the unit of work, which db.run_transaction runs again on a new connection. Its
    generic plan is used from the first run: only statements whose every parameter is an array of
    ids or a number, looked up by index whatever the values, belong here."""

    def __init__(self, name: str, statement: str, parameters: dict[str, str]) -> None:
        """`statement` names its parameters as psycopg2 does (`%(ids)s`); `parameters` gives each
        one's SQL type, in the order EXECUTE passes them."""
        self.name = name
        body = statement
        for position, parameter in enumerate(parameters, start=1):
            body = body.replace(f"%({parameter})s", f"${position}")
        if "%(" in body:
            raise ValueError(f"{name}: a parameter of the statement has no type: {body}")
        types = ", ".join(parameters.values())
        self._prepare = f"PREPARE {name} ({types}) AS {body}"
        arguments = ", ".join(f"%({parameter})s::{kind}" for parameter, kind in parameters.items())
        self._execute = f"{_GENERIC_PLAN}EXECUTE {name} ({arguments})"

    def text(self, connection: Connection) -> str:
        prepared = connection.info.setdefault("prepared_statements", set())
        if self.name not in prepared:
            connection.exec_driver_sql(self._prepare)
            prepared.add(self.name)
        return self._execute


# For the rest of the transaction only. plan_cache_mode: only prepared statements heed it (the
# driver prepares none): the plan made once is used from the first run, not replanned for each
# run's values. enable_seqscan: that plan lives as long as the connection (until an ANALYZE of
# one of its tables), so a plan made while a table was still small kept scanning it as it grew:
# the ledger's read under locks scanned all of hold_resolutions, 1.2 ms per batch at 5,000 rows,
# on a schema that started empty. Only index lookups belong in a Prepared statement, and the
# rest of the ledger's batch transaction is keyed lookups and writes too.
_GENERIC_PLAN = (
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true), set_config('enable_seqscan', 'off', true); "
)


def lost_prepared_statement(error: BaseException) -> bool:
    """The session no longer has, or can no longer use, what it prepared: a pooler's DEALLOCATE
    ALL (26000), or a migration that changed a column type under a cached plan (0A000). The
    connection must be replaced (its `info`, which names what it prepared, goes with it)."""
    code = getattr(error, "pgcode", None)
    return code == "26000" or (code == "0A000" and "cached plan must not change result type" in str(error))


@lru_cache(maxsize=64)
def _json_insert(table: Table, columns: tuple[str, ...]) -> str:
    names = ", ".join(columns)
    source = f"json_populate_recordset(NULL::{table.name}, %(rows)s::json)"
    return f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {source}"


def rows_as_written(row_type, values: Sequence[dict]) -> list:
    """Rows as insert_many wrote them (`row_type` a namedtuple of the table's columns), so a batch
    answers without a RETURNING: every column must be given (a default would not be seen here)."""
    if set(values[0]) != set(row_type._fields):
        raise ValueError(f"{row_type.__name__} needs every column: {sorted(set(row_type._fields) ^ set(values[0]))}")
    return [row_type(**value) for value in values]


def upsert_many(connection: Connection, table: Table, keys: tuple[str, ...], rows: Sequence[dict]) -> None:
    """insert_many, where a row whose `keys` already exist sets its other columns instead."""
    if not rows:
        return
    columns = tuple(rows[0])
    if connection.dialect.name != "postgresql":
        statement = sqlite.insert(table).values(list(rows))
        changes = {column: statement.excluded[column] for column in columns if column not in keys}
        connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))
        return
    connection.exec_driver_sql(*json_upsert(table, keys, rows))


def json_upsert(table: Table, keys: tuple[str, ...], rows: Sequence[dict]) -> tuple[str, dict]:
    """upsert_many's PostgreSQL statement and its parameters, for a OneTrip."""
    return _json_upsert(table, keys, tuple(rows[0])), {"rows": orjson.dumps(rows).decode()}


def json_update(table: Table, keys: tuple[str, ...], rows: Sequence[dict]) -> tuple[str, dict]:
    """For a OneTrip: set each row's other columns on the row with its `keys` (dicts with the
    same keys, JSON values), one statement whatever the number of rows."""
    return _json_update_keyed(table, keys, tuple(rows[0])), _rows_parameters(rows)


def _json_rows(table: Table) -> str:
    """The rows of a join's JSON parameter, counted for the planner. A set-returning function
    is estimated at 100 rows whatever it returns; joined to a table of a few thousand rows, 100
    probes cost more than a scan, so PostgreSQL hashes the JSON and scans the whole table for a
    batch of three (0.8 ms at 5,000 rows, growing with the table until it is large enough for
    the index to win). A LIMIT of the exact count brings the estimate down to the batch's size
    and drops nothing (a LIMIT only lowers an estimate: above 100 rows it stays at 100)."""
    return f"(SELECT * FROM json_populate_recordset(NULL::{table.name}, %(rows)s::json) LIMIT %(count)s)"


def _rows_parameters(rows: Sequence[dict]) -> dict:
    return {"rows": orjson.dumps(rows).decode(), "count": len(rows)}


@lru_cache(maxsize=64)
def _json_update_keyed(table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{column} = v.{column}" for column in columns if column not in keys)
    match = " AND ".join(f"t.{key} = v.{key}" for key in keys)
    return f"UPDATE {table.name} AS t SET {assignments} FROM {_json_rows(table)} AS v WHERE {match}"


@lru_cache(maxsize=64)
def _json_upsert(table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> str:
    changes = ", ".join(f"{column} = excluded.{column}" for column in columns if column not in keys)
    return f"{_json_insert(table, columns)} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {changes}"


def update_many(
    connection: Connection, table: Table, key: str, rows: Sequence[dict], only_if: dict[str, object] | None = None
) -> dict[object, Row]:
    """Set each row's values (dicts with the same keys, `key` among them) on the row with its
    key, only where the columns of `only_if` hold those values; return the rows of all the keys
    given as they are afterwards. On PostgreSQL that is one `UPDATE ... FROM json_populate_recordset
    RETURNING` (plus a read of the rows it left alone, if any), not a statement per row and a
    read back. Values must be JSON's, as for insert_many."""
    if not rows:
        return {}
    only_if = only_if or {}
    keys = [row[key] for row in rows]
    if connection.dialect.name != "postgresql":
        condition = and_(table.c[key] == bindparam(f"k_{key}"), *(table.c[c] == v for c, v in only_if.items()))
        values = {column: bindparam(f"v_{column}") for column in rows[0] if column != key}
        connection.execute(
            update(table).where(condition).values(values),
            [{(f"k_{c}" if c == key else f"v_{c}"): v for c, v in row.items()} for row in rows],
        )
        return _rows_by_key(connection, table, key, keys)
    parameters = _rows_parameters(rows)
    parameters.update({f"w{index}": value for index, value in enumerate(only_if.values())})
    statement = _json_update(table, key, tuple(rows[0]), tuple(only_if))
    found = {row._mapping[key]: row for row in connection.exec_driver_sql(statement, parameters)}
    left = [k for k in keys if k not in found]
    if left:  # rows `only_if` excluded (or absent): as they are
        found.update(_rows_by_key(connection, table, key, left))
    return found


def _rows_by_key(connection: Connection, table: Table, key: str, keys: list) -> dict[object, Row]:
    return {row._mapping[key]: row for row in connection.execute(select(table).where(table.c[key].in_(keys)))}


@lru_cache(maxsize=64)
def _json_update(table: Table, key: str, columns: tuple[str, ...], only_if: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{column} = v.{column}" for column in columns if column != key)
    conditions = "".join(f" AND t.{column} = %(w{index})s" for index, column in enumerate(only_if))
    returned = ", ".join(f"t.{column.name}" for column in table.c)
    return (
        f"UPDATE {table.name} AS t SET {assignments} FROM {_json_rows(table)} AS v"
        f" WHERE t.{key} = v.{key}{conditions} RETURNING {returned}"
    )
