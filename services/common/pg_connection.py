"""A psycopg2 connection whose transactions start without a round trip of their own.

psycopg2 opens each transaction by sending `BEGIN` alone and waiting for its answer before the
first statement. On a busy 2-core machine every round trip costs a wake-up of the database
backend and of the waiting thread, about 1-2 ms: the partners service's transaction for a merged
batch of earns made four (BEGIN, read, write, COMMIT) and took 9.7 ms on average.

This connection keeps psycopg2's own transaction semantics (DB-API: a transaction starts at the
first statement and ends with `commit()` or `rollback()`; `autocommit`, the isolation level,
`readonly` and `deferrable` mean what they mean in psycopg2), but sends `BEGIN` in the same
message as the first statement: `BEGIN ISOLATION LEVEL ...; <statement>`. PostgreSQL runs the
statements of one message in order and answers with the last one's result, so the cursor sees
exactly what the statement alone would give.

Underneath, the psycopg2 connection runs in its autocommit mode (it sends nothing of its own), and
whether a transaction is open is what libpq reports (`info.transaction_status`), never a flag of
ours that could go stale: `commit()` and `rollback()` send COMMIT or ROLLBACK only while the
server has one open, as psycopg2 does.
"""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext

_LEVELS = {
    ext.ISOLATION_LEVEL_READ_UNCOMMITTED: "READ UNCOMMITTED",
    ext.ISOLATION_LEVEL_READ_COMMITTED: "READ COMMITTED",
    ext.ISOLATION_LEVEL_REPEATABLE_READ: "REPEATABLE READ",
    ext.ISOLATION_LEVEL_SERIALIZABLE: "SERIALIZABLE",
}
_BY_NAME = {name: level for level, name in _LEVELS.items()}
_REAL_AUTOCOMMIT = ext.connection.autocommit  # psycopg2's own setting, kept on: it sends no BEGIN


class OneTripBeginCursor(ext.cursor):
    def execute(self, query, vars=None):
        connection = self.connection
        begin = connection.begin_statement()
        if begin is None or (isinstance(query, str | bytes) and not query.strip()):
            return super().execute(query, vars)  # (an empty query: psycopg2's own refusal)
        if not isinstance(query, str | bytes):  # a psycopg2.sql object: BEGIN in its own message
            super().execute(begin)
            return super().execute(query, vars)
        query = f"{begin}; {query}" if isinstance(query, str) else f"{begin}; ".encode() + query
        try:
            return super().execute(query, vars)
        except psycopg2.Error:
            # PostgreSQL parses a whole message before running any of it: a statement that does
            # not parse ran nothing, BEGIN included. psycopg2 would be in a failed transaction
            # now, refusing everything until rollback: so is this connection.
            if not connection.in_transaction():
                connection.failed_before_begin = True
            raise

    def _begin_alone(self) -> None:
        begin = self.connection.begin_statement()
        if begin is not None:
            super().execute(begin)

    # What cannot carry BEGIN in its own message sends it first, as psycopg2 would.
    def executemany(self, query, vars_list):
        self._begin_alone()
        return super().executemany(query, vars_list)

    def callproc(self, procname, parameters=None):
        self._begin_alone()
        return super().callproc(procname, parameters)

    def copy_expert(self, sql, file, size=8192):
        self._begin_alone()
        return super().copy_expert(sql, file, size)

    def copy_from(self, file, table, *args, **kwargs):
        self._begin_alone()
        return super().copy_from(file, table, *args, **kwargs)

    def copy_to(self, file, table, *args, **kwargs):
        self._begin_alone()
        return super().copy_to(file, table, *args, **kwargs)


class OneTripBeginConnection(ext.connection):
    """Pass as `connection_factory` to psycopg2.connect (SQLAlchemy: `connect_args`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _REAL_AUTOCOMMIT.__set__(self, True)
        self.cursor_factory = OneTripBeginCursor
        self._autocommit = False
        self._isolation: int | None = None  # None: the server's default_transaction_isolation
        self._readonly: bool | None = None
        self._deferrable: bool | None = None
        # The first statement of a transaction failed to parse (OneTripBeginCursor.execute).
        self.failed_before_begin = False

    # ---- when a statement must carry BEGIN ----

    def _require_open(self) -> None:
        if self.closed:
            raise psycopg2.InterfaceError("connection already closed")

    def in_transaction(self) -> bool:
        """True while the server has a transaction open (or the connection is broken: unknown)."""
        return self.info.transaction_status != ext.TRANSACTION_STATUS_IDLE

    @property
    def status(self) -> int:
        """psycopg2's `status`, as the server reports it (psycopg2's own would always say READY)."""
        return ext.STATUS_IN_TRANSACTION if self.in_transaction() or self.failed_before_begin else ext.STATUS_READY

    def begin_statement(self) -> str | None:
        """The BEGIN the next statement must carry, or None (autocommit, or a transaction is open)."""
        if self.failed_before_begin:
            raise psycopg2.errors.InFailedSqlTransaction(
                "current transaction is aborted, commands ignored until end of transaction block"
            )
        if self._autocommit or self.in_transaction():
            return None
        parts = ["BEGIN"]
        if self._isolation is not None:
            parts.append(f"ISOLATION LEVEL {_LEVELS[self._isolation]}")
        if self._readonly is not None:
            parts.append("READ ONLY" if self._readonly else "READ WRITE")
        if self._deferrable is not None:
            parts.append("DEFERRABLE" if self._deferrable else "NOT DEFERRABLE")
        return " ".join(parts)

    def cursor(self, *args, **kwargs):
        if args or kwargs.get("name"):
            # A named (server-side) cursor needs psycopg2's own transactions: not offered here.
            raise psycopg2.NotSupportedError("named cursors are not supported on this connection")
        cursor = super().cursor(*args, **kwargs)
        if not isinstance(cursor, OneTripBeginCursor):
            # Its statements would not start the transaction: they would run outside it.
            cursor.close()
            raise psycopg2.NotSupportedError("cursor factories must derive from OneTripBeginCursor")
        return cursor

    # ---- ending a transaction: only while the server has one open ----

    def commit(self) -> None:
        self._require_open()
        if self.failed_before_begin:  # psycopg2's COMMIT of a failed transaction: it rolls back
            self.failed_before_begin = False
            return
        if self.in_transaction():
            with ext.cursor(self) as cursor:
                cursor.execute("COMMIT")

    def rollback(self) -> None:
        self._require_open()
        self.failed_before_begin = False
        if self.in_transaction():
            with ext.cursor(self) as cursor:
                cursor.execute("ROLLBACK")

    def reset(self) -> None:
        raise psycopg2.NotSupportedError("reset() is not supported on this connection")

    def set_client_encoding(self, encoding) -> None:
        raise psycopg2.NotSupportedError("set the client encoding in the connection options instead")

    # ---- psycopg2's session settings, kept here instead of in psycopg2 ----

    def _check_idle(self) -> None:
        self._require_open()
        if self.in_transaction() or self.failed_before_begin:
            raise psycopg2.ProgrammingError("set_session cannot be used inside a transaction")

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self._check_idle()
        self._autocommit = bool(value)

    # The properties take None as psycopg2 does: back to the server's default.
    @property
    def isolation_level(self) -> int | None:
        return self._isolation

    @isolation_level.setter
    def isolation_level(self, value) -> None:
        self._check_idle()
        self._isolation = _isolation(value)

    @property
    def readonly(self) -> bool | None:
        return self._readonly

    @readonly.setter
    def readonly(self, value) -> None:
        self._check_idle()
        self._readonly = _tristate(value)

    @property
    def deferrable(self) -> bool | None:
        return self._deferrable

    @deferrable.setter
    def deferrable(self, value) -> None:
        self._check_idle()
        self._deferrable = _tristate(value)

    def set_session(self, isolation_level=None, readonly=None, deferrable=None, autocommit=None) -> None:
        """psycopg2's: an argument left None leaves its setting as it is; "default" resets it."""
        self._check_idle()
        if isolation_level is not None:
            self._isolation = _isolation(isolation_level)
        if readonly is not None:
            self._readonly = _tristate(readonly)
        if deferrable is not None:
            self._deferrable = _tristate(deferrable)
        if autocommit is not None:
            self._autocommit = bool(autocommit)

    def set_isolation_level(self, level: int) -> None:
        """psycopg2's legacy form: a transaction in progress is rolled back; 0 means autocommit."""
        self.rollback()
        if level == ext.ISOLATION_LEVEL_AUTOCOMMIT:
            self._autocommit = True
            return
        if level not in _LEVELS and level != ext.ISOLATION_LEVEL_DEFAULT:
            raise ValueError(f"isolation level must be between 0 and 4, not {level!r}")
        self._autocommit = False
        self._isolation = None if level == ext.ISOLATION_LEVEL_DEFAULT else level


def _isolation(value) -> int | None:
    if value is None or (isinstance(value, str) and value.upper() == "DEFAULT"):
        return None
    if isinstance(value, str):
        level = _BY_NAME.get(value.upper().replace("_", " "))
        if level is None:
            raise ValueError(f"bad value for isolation_level: {value!r}")
        return level
    if value in _LEVELS:
        return value
    raise ValueError(f"bad value for isolation_level: {value!r}")


def _tristate(value) -> bool | None:
    if value is None or (isinstance(value, str) and value.upper() == "DEFAULT"):
        return None
    return bool(value)
