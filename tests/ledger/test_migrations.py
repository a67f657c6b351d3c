"""The ledger's expiry migrations build exactly the tables the code declares (lot_store.py,
notice_store.py), and the expiry notices migration goes down and up again, on SQLite and
PostgreSQL. (The journal tables of 0001 carry foreign keys and indexes that store.py does not
declare; they are left out of the comparison.)"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from services.common.db import Database, DatabaseOptions
from services.ledger import lot_store, notice_store, store
from services.ledger.server import MIGRATIONS
from tests.support.databases import new_database_url
from tests.support.migrations import differences_from, migrate

VERSION_TABLE = "alembic_version_ledger"
assert lot_store.lots.metadata is notice_store.expiry_notices.metadata is store.metadata


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    url, cleanup = new_database_url(request.param, tmp_path, "ledger")
    database = Database(DatabaseOptions(url))
    yield database
    database.dispose()
    cleanup()


EXPIRY_TABLES = {"expiry_policies", "lots", "lot_draws", "expiry_exemptions", "wallet_activity", "expiry_notices"}


def _table_of(difference) -> str:
    item = difference[0] if isinstance(difference, list) else difference
    if item[0].startswith("modify_") or item[0] in ("add_column", "remove_column"):
        return item[2]  # (operation, schema, table name, ...)
    subject = item[1]
    return subject.name if item[0].endswith("_table") else subject.table.name


def test_the_expiry_migrations_build_the_tables_the_code_declares(database):
    migrate(database, MIGRATIONS, VERSION_TABLE, "head")
    differences = differences_from(database, store.metadata, VERSION_TABLE)
    assert [d for d in differences if _table_of(d) in EXPIRY_TABLES] == []


def test_the_expiry_notices_migration_goes_down_and_up_again(database):
    migrate(database, MIGRATIONS, VERSION_TABLE, "head")
    migrate(database, MIGRATIONS, VERSION_TABLE, "0002", down=True)
    with database.writer.connect() as connection:
        assert "expiry_notices" not in inspect(connection).get_table_names()
    migrate(database, MIGRATIONS, VERSION_TABLE, "head")
    with database.writer.connect() as connection:
        assert "expiry_notices" in inspect(connection).get_table_names()
