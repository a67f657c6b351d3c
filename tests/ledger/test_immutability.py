"""The journal cannot be rewritten: the database itself refuses UPDATE, DELETE (and on PostgreSQL
TRUNCATE) on the append-only tables, whatever path the SQL comes from. And the shared
run_transaction retries a real PostgreSQL deadlock so both units of work complete.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from services.common.db import Database, DatabaseOptions, run_transaction
from tests.ledger.helpers import CREATED, FAILED, pending, post, posted, setup_pts, transfer, unique
from tests.support.databases import PostgresSchema, require_postgres
from tests.support.tls import channel as tls_channel

# Table -> an UPDATE that would change every row, if the database let it.
JOURNAL_UPDATES = {
    "currencies": "UPDATE currencies SET scale = scale + 1",
    "accounts": "UPDATE accounts SET kind = 'tampered'",
    "transfers": "UPDATE transfers SET amount = amount + 1",
    "entries": "UPDATE entries SET posted_amount = posted_amount + 1",
    "hold_resolutions": "UPDATE hold_resolutions SET state = 3",
    "transfer_failures": "UPDATE transfer_failures SET failure_message = 'tampered'",
}


@pytest.fixture
def journal(ledger, ledger_database_url):
    """A ledger with rows in every journal table, and a plain SQLAlchemy engine on its database."""
    issuance, (wallet, shop) = setup_pts(ledger, wallets=2)
    hold = pending(unique("hold"), wallet, shop, 30)
    results = transfer(
        ledger,
        posted(unique("earn"), issuance, wallet, 100),
        hold,
        post(unique("capture"), hold.id, 20),
        posted(unique("overdraft"), wallet, shop, 10_000),
    )
    assert [r.status for r in results] == [CREATED, CREATED, CREATED, FAILED]
    engine = create_engine(ledger_database_url)
    yield engine
    engine.dispose()


def snapshot(engine) -> dict[str, list]:
    with engine.connect() as connection:
        return {
            table: sorted(tuple(row) for row in connection.execute(text(f"SELECT * FROM {table}")))
            for table in JOURNAL_UPDATES
        }


def refused_statements(engine, statements: dict[str, str]) -> dict[str, str]:
    """Run each statement in its own transaction; returns table -> the database's refusal (or '')."""
    outcome = {}
    for table, statement in statements.items():
        try:
            with engine.begin() as connection:
                connection.execute(text(statement))
            outcome[table] = ""
        except sa_exc.DBAPIError as error:
            outcome[table] = str(error.orig)
    return outcome


def test_every_journal_table_holds_rows_to_protect(journal):
    assert all(snapshot(journal).values())


def test_update_on_journal_tables_is_refused_by_the_database(journal):
    before = snapshot(journal)
    refusals = refused_statements(journal, JOURNAL_UPDATES)
    assert {table: "append-only" in message for table, message in refusals.items()} == dict.fromkeys(
        JOURNAL_UPDATES, True
    ), refusals
    assert snapshot(journal) == before


def test_delete_on_journal_tables_is_refused_by_the_database(journal):
    before = snapshot(journal)
    # Children first, so a foreign key cannot be what refuses the delete.
    order = ["transfer_failures", "hold_resolutions", "entries", "transfers", "accounts", "currencies"]
    refusals = refused_statements(journal, {table: f"DELETE FROM {table}" for table in order})
    assert {table: "append-only" in message for table, message in refusals.items()} == dict.fromkeys(order, True), (
        refusals
    )
    assert snapshot(journal) == before


def test_truncate_on_journal_tables_is_refused_by_postgres(journal, backend):
    if backend != "postgres":
        pytest.skip("SQLite has no TRUNCATE; DELETE without WHERE is covered above")
    before = snapshot(journal)
    # CASCADE so that foreign keys cannot be what refuses it: only the triggers stand in the way.
    refusals = refused_statements(journal, {table: f"TRUNCATE {table} CASCADE" for table in JOURNAL_UPDATES})
    assert {table: "append-only" in message for table, message in refusals.items()} == dict.fromkeys(
        JOURNAL_UPDATES, True
    ), refusals
    assert snapshot(journal) == before


def test_run_transaction_retries_a_postgres_deadlock_until_both_units_complete():
    require_postgres()
    schema = PostgresSchema("deadlock")
    database = Database(DatabaseOptions(url=schema.url, pool_size=2))
    try:
        with database.writer.begin() as connection:
            connection.execute(text("CREATE TABLE pair (id integer PRIMARY KEY, touched integer NOT NULL)"))
            connection.execute(text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
        both_hold_their_first_lock = threading.Barrier(2, timeout=10)
        attempts = {"forward": 0, "backward": 0}
        errors: list[BaseException] = []

        def lock_in_order(name: str, first: int, second: int):
            def work(connection):
                attempts[name] += 1
                connection.execute(text("UPDATE pair SET touched = touched + 1 WHERE id = :id"), {"id": first})
                if attempts[name] == 1:  # only the first attempts meet, so the retry runs alone
                    both_hold_their_first_lock.wait()
                connection.execute(text("UPDATE pair SET touched = touched + 1 WHERE id = :id"), {"id": second})

            def run():
                try:
                    run_transaction(database.writer, work)
                except BaseException as error:  # surfaced by the main thread
                    errors.append(error)

            return threading.Thread(target=run, name=name)

        threads = [lock_in_order("forward", 1, 2), lock_in_order("backward", 2, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors, errors
        # PostgreSQL aborted one side as the deadlock victim; it ran again and both succeeded. The
        # retry can meet the winner once more (waiters woken by the victim's abort race for the
        # row; seen on a loaded machine), so it may take another round, never unbounded.
        assert sum(attempts.values()) >= 3 and max(attempts.values()) <= 8, attempts
        with database.reader.connect() as connection:
            touched = dict(connection.execute(text("SELECT id, touched FROM pair")).all())
        assert touched == {1: 2, 2: 2}
    finally:
        database.dispose()
        schema.drop()


def test_the_ledger_runs_as_a_role_that_can_only_read_and_append_the_journal(tmp_path):
    """The ledger's production grants (services/ledger/migrations/grants.sql) are enough to run
    it, and under them not even the trigger can be switched off: the journal is safe from the
    service's own credentials."""

    from coalition.ledger.v1 import ledger_pb2_grpc
    from tests.support.roles import ServiceRole
    from tests.support.servers import start_ledger_thread

    require_postgres()
    schema = PostgresSchema("roles")
    role = None
    try:
        owner_server = start_ledger_thread(schema.url)  # the owner migrates
        owner_server.stop()
        role = ServiceRole("ledger", schema.name, schema.url)
        server = start_ledger_thread(role.url)
        try:
            with tls_channel(server.address) as channel:
                ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
                issuance, (wallet, shop) = setup_pts(ledger)
                hold = pending("hold", wallet, shop, 5, timeout_seconds=600)
                results = transfer(ledger, posted("earn", issuance, wallet, 10), hold, post("capture", "hold", 5))
                assert [r.status for r in results] == [CREATED] * 3
        finally:
            server.stop()
        app = create_engine(role.url)
        try:
            for statement in (
                "UPDATE transfers SET amount = amount + 1",
                "DELETE FROM entries",
                "ALTER TABLE transfers DISABLE TRIGGER transfers_append_only",
                "TRUNCATE transfers CASCADE",
            ):
                with pytest.raises(sa_exc.DBAPIError), app.begin() as connection:
                    connection.execute(text(statement))
        finally:
            app.dispose()
    finally:
        schema.drop()
        if role is not None:
            role.drop()
