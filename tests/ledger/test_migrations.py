"""The ledger migrations build the journal and the expiry tables the code declares; 0003
(tier_bonus_points) upgrades a journal that already holds transfers, which then read 0; 0004
(expiry notices) goes down and up again; on SQLite and PostgreSQL. (The journal tables of 0001
carry foreign keys and indexes that store.py does not declare; the full comparison is limited to
the expiry tables.)"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from services.common.db import Database, DatabaseOptions
from services.ledger import lot_store, notice_store, store
from services.ledger.server import MIGRATIONS
from services.ledger.store import transfers
from tests.support.databases import new_database_url
from tests.support.migrations import differences_from, migrate

VERSION_TABLE = "alembic_version_ledger"
EXPIRY_TABLES = {"expiry_policies", "lots", "lot_draws", "expiry_exemptions", "wallet_activity", "expiry_notices"}
assert lot_store.lots.metadata is notice_store.expiry_notices.metadata is store.metadata


def _migrate(database: Database, revision: str, down: bool = False) -> None:
    migrate(database, MIGRATIONS, VERSION_TABLE, revision, down)


@pytest.fixture
def database(backend, tmp_path):
    url, cleanup = new_database_url(backend, tmp_path, "ledger")
    database = Database(DatabaseOptions(url))
    yield database
    database.dispose()
    cleanup()


def test_the_migrations_build_the_journal_columns_the_code_declares(database):
    _migrate(database, "head")
    with database.writer.connect() as connection:
        columns = {column["name"]: column for column in inspect(connection).get_columns("transfers")}
    assert set(columns) == {column.name for column in transfers.c}
    assert not columns["tier_bonus_points"]["nullable"]


def test_transfers_stored_before_0003_read_no_tier_bonus(database):
    _migrate(database, "0002")
    with database.writer.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO transfers (sequence, id, debit_account_id, credit_account_id, amount, currency_code,"
                " kind, code, timeout_seconds, partner_id, store_id, terminal_id, receipt_id, member_id,"
                " committed_at_us) VALUES (1, 'earn:shop:r1', 'issuance:PTS:shop', 'wallet:PTS:m-1', 120, 'PTS',"
                " 1, 1, 0, 'shop', 's', 't', 'r1', 'm-1', 1)"
            )
        )
    _migrate(database, "head")
    with database.writer.connect() as connection:
        assert connection.execute(text("SELECT tier_bonus_points FROM transfers")).scalar_one() == 0
    _migrate(database, "0002", down=True)
    _migrate(database, "head")
    with database.writer.connect() as connection:
        assert connection.execute(text("SELECT id, tier_bonus_points FROM transfers")).all() == [("earn:shop:r1", 0)]


def _table_of(difference) -> str:
    item = difference[0] if isinstance(difference, list) else difference
    if item[0].startswith("modify_") or item[0] in ("add_column", "remove_column"):
        return item[2]  # (operation, schema, table name, ...)
    subject = item[1]
    return subject.name if item[0].endswith("_table") else subject.table.name


def test_the_expiry_migrations_build_the_tables_the_code_declares(database):
    _migrate(database, "head")
    differences = differences_from(database, store.metadata, VERSION_TABLE)
    assert [d for d in differences if _table_of(d) in EXPIRY_TABLES] == []


def test_the_expiry_notices_migration_goes_down_and_up_again(database):
    _migrate(database, "head")
    _migrate(database, "0003", down=True)
    with database.writer.connect() as connection:
        assert "expiry_notices" not in inspect(connection).get_table_names()
    _migrate(database, "head")
    with database.writer.connect() as connection:
        assert "expiry_notices" in inspect(connection).get_table_names()
