"""The ledger migrations build the journal the code declares, and 0003 (tier_bonus_points) upgrades
a journal that already holds transfers, which then read 0, and goes down and up again, on SQLite
and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from services.common.db import Database, DatabaseOptions
from services.ledger.server import MIGRATIONS
from services.ledger.store import transfers
from tests.support.databases import new_database_url
from tests.support.migrations import migrate

VERSION_TABLE = "alembic_version_ledger"


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
