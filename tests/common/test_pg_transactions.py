"""Transactions on PostgreSQL open with their first statement (services/common/pg_dialect.py):
one round trip fewer per transaction, and the same transactions as before."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from services.common import pg_dialect
from services.common.db import Database, DatabaseOptions
from tests.support.databases import new_database_url


@pytest.fixture
def database(tmp_path):
    url, cleanup = new_database_url("postgres", tmp_path, "pgtxn")
    # One connection: every unit below runs on the connection the one before it used.
    database = Database(DatabaseOptions(url, pool_size=1))
    database.write(lambda c: c.exec_driver_sql("CREATE TABLE pgtxn_notes (note_id int PRIMARY KEY, body text)"))
    yield database
    database.dispose()
    cleanup()


def _notes(database: Database) -> list[int]:
    return database.read(lambda c: [row[0] for row in c.exec_driver_sql("SELECT note_id FROM pgtxn_notes ORDER BY 1")])


def test_the_first_statement_carries_the_begin_and_the_rest_run_in_its_transaction(database):
    def work(connection):
        first = connection.exec_driver_sql("SELECT txid_current()")
        sent = first.cursor.query.decode()
        transaction = first.scalar()
        second = connection.exec_driver_sql("SELECT txid_current()")
        return sent, second.cursor.query.decode(), transaction, second.scalar()

    first_sent, second_sent, first_id, second_id = database.write(work)
    assert first_sent == "BEGIN ISOLATION LEVEL READ COMMITTED;SELECT txid_current()"
    assert second_sent == "SELECT txid_current()"
    assert first_id == second_id


def test_each_engine_opens_its_own_isolation_level_and_a_single_statement_read_opens_none(database):
    setting = "SELECT current_setting('transaction_isolation'), txid_current_if_assigned() IS NULL"
    assert database.write(lambda c: c.exec_driver_sql(setting).one()) == ("read committed", True)
    assert database.read(lambda c: c.exec_driver_sql(setting).one()) == ("repeatable read", True)
    sent = database.read_statement(lambda c: c.exec_driver_sql("SELECT 1").cursor.query.decode())
    assert sent == "SELECT 1"
    # Back in the pool, the connection opens transactions at its engine's level again.
    assert database.read(lambda c: c.exec_driver_sql(setting).one()) == ("repeatable read", True)


def test_a_repeatable_read_sees_one_snapshot_across_its_statements(database):
    def work(connection):
        before = connection.exec_driver_sql("SELECT count(*) FROM pgtxn_notes").scalar()
        Database(DatabaseOptions(database.options.url)).write(
            lambda other: other.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (1, 'meanwhile')")
        )
        return before, connection.exec_driver_sql("SELECT count(*) FROM pgtxn_notes").scalar()

    assert database.read(work) == (0, 0)
    assert _notes(database) == [1]


def test_a_failed_unit_leaves_nothing_and_the_connection_opens_the_next_transaction(database):
    def fails(connection):
        connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (1, 'kept only if committed')")
        connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (1, 'duplicate key')")

    with pytest.raises(sa_exc.IntegrityError):
        database.write(fails)
    assert _notes(database) == []
    database.write(lambda c: c.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (2, 'next')"))
    assert _notes(database) == [2]


def test_a_first_statement_the_driver_refuses_before_sending_leaves_the_begin_due(database):
    def work(connection):
        with pytest.raises(sa_exc.StatementError):  # psycopg2 cannot adapt an object: nothing is sent
            connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (%(id)s, 'x')", {"id": object()})
        connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (3, 'inside the transaction')")
        raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        database.write(work)
    assert _notes(database) == []  # the second insert ran in the transaction, which rolled back


def test_a_copy_on_the_drivers_own_cursor_runs_in_the_transaction_after_send_due_begin(database):
    import io

    def work(connection):
        raw = connection.connection.dbapi_connection
        pg_dialect.send_due_begin(raw)
        with raw.cursor() as cursor:
            cursor.copy_expert("COPY pgtxn_notes FROM STDIN", io.StringIO("4\tcopied\n"))
        raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        database.write(work)
    assert _notes(database) == []


def test_savepoints_roll_back_their_own_part_only(database):
    def work(connection):
        connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (5, 'outer')")
        with pytest.raises(sa_exc.IntegrityError), connection.begin_nested():
            connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (5, 'again')")
        connection.exec_driver_sql("INSERT INTO pgtxn_notes VALUES (6, 'after')")

    database.write(work)
    assert _notes(database) == [5, 6]
