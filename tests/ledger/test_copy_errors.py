"""A big batch COPYs its rows (services/ledger/store.py): the driver's errors still arrive as
SQLAlchemy's, which the transaction's retry and the batcher's fallbacks tell apart."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from services.common.db import Database, DatabaseOptions, open_migrated
from services.ledger import store
from services.ledger.server import MIGRATIONS
from tests.support.databases import new_database_url

ENTRY = ("wallet:PTS:m-1", 1, 1, 1, 5, 0, 1, 5, 0, 0, 0)


def test_a_copy_that_breaks_a_unique_key_raises_sqlalchemys_integrity_error(tmp_path):
    url, cleanup = new_database_url("postgres", tmp_path, "copy")
    database = open_migrated(DatabaseOptions(url), MIGRATIONS, "alembic_version_ledger")
    try:
        database.write(lambda c: store._insert_rows(c, store.entries, store._ENTRY_INSERT_COLUMNS, [ENTRY]))
        with pytest.raises(sa_exc.IntegrityError):
            database.write(lambda c: store._insert_rows(c, store.entries, store._ENTRY_INSERT_COLUMNS, [ENTRY]))
    finally:
        database.dispose()
        cleanup()


def test_a_copy_on_a_connection_the_database_dropped_is_retried_on_a_new_one(tmp_path):
    url, cleanup = new_database_url("postgres", tmp_path, "copy")
    database = open_migrated(DatabaseOptions(url, pool_size=1), MIGRATIONS, "alembic_version_ledger")
    killer = Database(DatabaseOptions(url))
    sessions = []

    def work(connection):
        sessions.append(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        if len(sessions) == 1:  # dropped between the batch's reads and its COPY (a restart)
            killer.read_statement(lambda c: c.exec_driver_sql("SELECT pg_terminate_backend(%s)", (sessions[0],)))
        store._insert_rows(connection, store.entries, store._ENTRY_INSERT_COLUMNS, [ENTRY])

    try:
        database.write(work)
        assert len(sessions) == 2 and sessions[0] != sessions[1]
        count = database.read(lambda c: c.exec_driver_sql("SELECT count(*) FROM entries").scalar())
        assert count == 1
    finally:
        killer.dispose()
        database.dispose()
        cleanup()
