"""psycopg2 on PostgreSQL, with each transaction's BEGIN sent in the same round trip as its first
statement.

psycopg2 opens a transaction by sending BEGIN on its own and waiting for the answer before it
sends the first statement: one round trip per transaction that does nothing else. On this
project's 2-core machine a BEGIN/SELECT/COMMIT transaction took 278 µs and 103 µs of client CPU
that way, and 215 µs and 77 µs with the BEGIN in front of the SELECT; under load every round
trip also waits for the GIL and for a core. Every POS call runs two to five transactions.

Here the driver stays in autocommit mode (it never sends BEGIN itself) and the dialect opens the
transaction: `do_begin` only notes that a BEGIN is due, the first statement goes as
`BEGIN ISOLATION LEVEL <level>;<statement>` (PostgreSQL runs the string in order in one round
trip, and the statement runs inside the transaction), and COMMIT or ROLLBACK is sent only when
libpq reports a transaction open (it knows without asking the server). Commit and rollback run
where SQLAlchemy wraps driver errors, so callers see SQLAlchemy's exceptions as before.

A connection whose isolation level is set to AUTOCOMMIT (`Database.read_statement`) gets no
BEGIN at all: each statement is its own transaction. Code that sends statements on the driver's
own cursor (COPY) calls `send_due_begin` first. One difference from psycopg2's own BEGIN: a
first statement PostgreSQL cannot parse fails the whole string, BEGIN included, so the
transaction has not started and the next statement opens it (with psycopg2's, the next
statement would find the transaction aborted). Either way the failed statement did nothing.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import extensions
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

DRIVER_NAME = "coalition_psycopg2"
_ISOLATION_LEVELS = {"READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "AUTOCOMMIT"}


class _Connection(extensions.connection):
    """A psycopg2 connection that carries its transaction bookkeeping."""

    isolation_level_name = "READ COMMITTED"
    # What opens a transaction at this connection's isolation level; "" under AUTOCOMMIT.
    begin_sql = "BEGIN ISOLATION LEVEL READ COMMITTED;"
    # True between SQLAlchemy's begin and the first statement, which then carries the BEGIN.
    begin_due = False


def _raw(connection) -> _Connection:
    """The driver's connection, from SQLAlchemy's pooled proxy or as it is."""
    return getattr(connection, "dbapi_connection", connection)


def _in_transaction(raw: _Connection) -> bool:
    if raw.closed:
        # As psycopg2's own commit and rollback do: InterfaceError, which SQLAlchemy takes for a
        # disconnect, so the connection is invalidated (not pooled again) and the unit retried.
        raise psycopg2.InterfaceError("connection already closed")
    return raw.info.transaction_status != extensions.TRANSACTION_STATUS_IDLE


def _still_idle(raw: _Connection) -> bool:
    return not raw.closed and raw.info.transaction_status == extensions.TRANSACTION_STATUS_IDLE


def send_due_begin(connection) -> None:
    """Open the transaction now if its BEGIN is still due: before sending anything on the
    driver's own cursor (COPY), which does not go through the dialect."""
    raw = _raw(connection)
    if getattr(raw, "begin_due", False):
        with raw.cursor() as cursor:
            cursor.execute(raw.begin_sql)
        raw.begin_due = False


def _execute_opening(cursor, statement: str, *parameters) -> None:
    """Run a statement, with the transaction's BEGIN in front of it when one is due."""
    raw = cursor.connection
    if not raw.begin_due:
        cursor.execute(statement, *parameters)
        return
    raw.begin_due = False
    try:
        cursor.execute(raw.begin_sql + statement, *parameters)
    except BaseException:
        # Refused before the BEGIN ran (a parameter the driver cannot adapt, a statement
        # PostgreSQL cannot parse, which fails the whole string): still due.
        raw.begin_due = _still_idle(raw)
        raise


def _end(raw: _Connection, statement: str) -> None:
    """COMMIT or ROLLBACK, sent only if a transaction is open (a due BEGIN was never sent)."""
    raw.begin_due = False
    if _in_transaction(raw):
        with raw.cursor() as cursor:
            cursor.execute(statement)


class OneTripBeginDialect(PGDialect_psycopg2):
    supports_statement_cache = True
    # psycopg2 refuses named (server-side) cursors in autocommit mode; nothing here streams.
    supports_server_side_cursors = False

    def connect(self, *cargs, **cparams):
        cparams["connection_factory"] = _Connection
        connection = super().connect(*cargs, **cparams)
        connection.autocommit = True  # the dialect sends BEGIN, COMMIT and ROLLBACK itself
        return connection

    def set_isolation_level(self, dbapi_connection, level: str) -> None:
        if level not in _ISOLATION_LEVELS:
            raise ValueError(f"unsupported isolation level {level!r}")
        raw = _raw(dbapi_connection)
        raw.isolation_level_name = level
        raw.begin_sql = "" if level == "AUTOCOMMIT" else f"BEGIN ISOLATION LEVEL {level};"

    def get_isolation_level(self, dbapi_connection) -> str:
        return _raw(dbapi_connection).isolation_level_name

    def do_begin(self, dbapi_connection) -> None:
        raw = _raw(dbapi_connection)
        _end(raw, "ROLLBACK")  # never expected: a transaction left open must not absorb the next
        raw.begin_due = bool(raw.begin_sql)

    def do_execute(self, cursor, statement, parameters, context=None) -> None:
        _execute_opening(cursor, statement, parameters)

    def do_execute_no_params(self, cursor, statement, context=None) -> None:
        _execute_opening(cursor, statement)

    def do_executemany(self, cursor, statement, parameters, context=None) -> None:
        send_due_begin(cursor.connection)  # rare as a transaction's first statement: its own trip
        super().do_executemany(cursor, statement, parameters, context)

    def do_commit(self, dbapi_connection) -> None:
        _end(_raw(dbapi_connection), "COMMIT")

    def do_rollback(self, dbapi_connection) -> None:
        _end(_raw(dbapi_connection), "ROLLBACK")


registry.register(f"postgresql.{DRIVER_NAME}", __name__, "OneTripBeginDialect")
