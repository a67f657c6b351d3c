"""The services' PostgreSQL connection (services/common/pg_connection.py): BEGIN rides with a
transaction's first statement, and transactions mean exactly what they mean in psycopg2."""

from __future__ import annotations

import io
import threading

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from services.common.db import Database, DatabaseOptions
from services.common.pg_connection import OneTripBeginConnection, OneTripBeginCursor
from tests.support.databases import PostgresSchema, postgres_url, require_postgres


@pytest.fixture
def database():
    require_postgres()
    schema = PostgresSchema("onetrip")
    database = Database(DatabaseOptions(schema.url))
    database.write(lambda c: c.execute(text("CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)")))
    yield database
    database.dispose()
    schema.drop()


def _first_statement_shares_begins_message(connection) -> bool:
    # PostgreSQL stamps the transaction's start (now()) when its BEGIN arrives and each message's
    # statements with the message's arrival: equal only if BEGIN came in the first statement's message.
    return connection.execute(text("SELECT now() = statement_timestamp()")).scalar_one()


def test_a_transactions_first_statement_carries_its_begin(database):
    assert database.write(_first_statement_shares_begins_message)
    assert database.read(_first_statement_shares_begins_message)


def test_plain_psycopg2_sends_begin_alone_so_the_check_above_can_fail(database):
    plain = create_engine(postgres_url())  # psycopg2's own connection class
    try:
        with plain.begin() as connection:
            assert not _first_statement_shares_begins_message(connection)
    finally:
        plain.dispose()


def test_each_engine_keeps_its_isolation_level(database):
    level = "SELECT current_setting('transaction_isolation')"
    assert database.write(lambda c: c.execute(text(level)).scalar_one()) == "read committed"
    assert database.read(lambda c: c.execute(text(level)).scalar_one()) == "repeatable read"


def test_a_single_statement_read_takes_no_transaction(database):
    # AUTOCOMMIT: no BEGIN at all, so now() is the statement's own time and no snapshot is held.
    assert database.read_statement(
        lambda c: c.execute(text("SELECT txid_current_if_assigned() IS NULL AND now() = statement_timestamp()"))
    ).scalar_one()


def test_commit_keeps_and_rollback_discards_everything_since_begin(database):
    database.write(lambda c: c.execute(text("INSERT INTO notes VALUES (1, 'kept'), (2, 'kept')")))

    def fails(connection):
        connection.execute(text("INSERT INTO notes VALUES (3, 'lost')"))
        connection.execute(text("UPDATE notes SET body = 'lost' WHERE id = 1"))
        connection.execute(text("INSERT INTO notes VALUES (2, 'duplicate')"))

    with pytest.raises(sa_exc.IntegrityError):
        database.write(fails)
    rows = database.read(lambda c: c.execute(text("SELECT id, body FROM notes ORDER BY id")).all())
    assert [tuple(row) for row in rows] == [(1, "kept"), (2, "kept")]


def test_a_failed_first_statement_leaves_the_connection_idle_for_the_next_transaction(database):
    with pytest.raises(sa_exc.DataError):
        database.write(lambda c: c.execute(text("SELECT 1 / 0")))
    # The pool hands the same connection back (pool of one in use): it must not be in a transaction.
    assert database.write(_first_statement_shares_begins_message)
    assert database.write(lambda c: c.execute(text("SELECT count(*) FROM notes")).scalar_one()) == 0


def test_a_savepoint_as_the_first_statement_opens_the_transaction(database):
    def work(connection):
        with connection.begin_nested():
            connection.execute(text("INSERT INTO notes VALUES (1, 'kept')"))
        nested = connection.begin_nested()
        connection.execute(text("INSERT INTO notes VALUES (2, 'rolled back')"))
        nested.rollback()
        return connection.execute(text("SELECT array_agg(id) FROM notes")).scalar_one()

    assert database.write(work) == [1]
    assert database.read(lambda c: c.execute(text("SELECT array_agg(id) FROM notes")).scalar_one()) == [1]


def test_a_row_lock_is_held_until_commit(database):
    """The lock taken by the first statement (which carried BEGIN) lasts the whole transaction."""
    database.write(lambda c: c.execute(text("INSERT INTO notes VALUES (1, 'a')")))
    locked, release = threading.Event(), threading.Event()

    def holder(connection):
        connection.execute(text("SELECT body FROM notes WHERE id = 1 FOR UPDATE"))
        locked.set()
        release.wait(10)
        connection.execute(text("UPDATE notes SET body = 'holder' WHERE id = 1"))

    thread = threading.Thread(target=lambda: database.write(holder))
    thread.start()
    assert locked.wait(10)
    try:
        with (
            database.writer.connect() as other,
            pytest.raises(sa_exc.OperationalError, match="lock timeout"),
            other.begin(),
        ):
            other.execute(text("SET LOCAL lock_timeout = '200ms'"))
            other.execute(text("UPDATE notes SET body = 'other' WHERE id = 1"))
    finally:
        release.set()
        thread.join(10)
    assert database.read(lambda c: c.execute(text("SELECT body FROM notes WHERE id = 1")).scalar_one()) == "holder"


def test_a_first_statement_that_does_not_parse_fails_the_transaction_as_psycopg2_would(database):
    """PostgreSQL ran nothing of that message, BEGIN included: the statements after it must not
    run and commit on their own, but be refused until the rollback, as in a failed transaction."""

    def swallows_the_error(connection):
        with pytest.raises(sa_exc.ProgrammingError):
            connection.execute(text("SELEC 1"))
        connection.execute(text("INSERT INTO notes VALUES (1, 'must not commit')"))

    with pytest.raises(sa_exc.InternalError, match="current transaction is aborted"):
        database.write(swallows_the_error)
    assert database.read(lambda c: c.execute(text("SELECT count(*) FROM notes")).scalar_one()) == 0
    assert database.write(_first_statement_shares_begins_message)  # the pooled connection recovered


def test_a_copy_that_opens_a_transaction_is_inside_it(database):
    raw = database.writer.raw_connection()
    try:
        connection = raw.dbapi_connection
        with connection.cursor() as cursor:
            cursor.copy_expert("COPY notes (id, body) FROM STDIN", io.StringIO("1\tcopied\n"))
        assert connection.in_transaction()
        connection.rollback()
    finally:
        raw.close()
    assert database.read(lambda c: c.execute(text("SELECT count(*) FROM notes")).scalar_one()) == 0


def test_cursors_that_could_run_outside_the_transaction_are_refused(database):
    raw = database.writer.raw_connection()
    try:
        connection = raw.dbapi_connection
        assert isinstance(connection, OneTripBeginConnection)
        with pytest.raises(psycopg2.NotSupportedError):
            connection.cursor("named")
        with pytest.raises(psycopg2.NotSupportedError):
            connection.cursor(cursor_factory=psycopg2.extensions.cursor)
        connection.cursor_factory = psycopg2.extensions.cursor
        try:
            with pytest.raises(psycopg2.NotSupportedError):
                connection.cursor()
        finally:
            connection.cursor_factory = OneTripBeginCursor
    finally:
        raw.close()


def test_session_settings_cannot_change_inside_a_transaction(database):
    raw = database.writer.raw_connection()
    connection = raw.dbapi_connection
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert connection.in_transaction()
        assert connection.status == psycopg2.extensions.STATUS_IN_TRANSACTION
        with pytest.raises(psycopg2.ProgrammingError):
            connection.autocommit = True
        connection.rollback()
        assert connection.status == psycopg2.extensions.STATUS_READY
        connection.set_session(readonly=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('transaction_read_only')")
            assert cursor.fetchone()[0] == "on"
        connection.rollback()
        connection.readonly = None
        assert connection.readonly is None
    finally:
        connection.rollback()
        connection.readonly = None
        raw.close()
