"""The settlement migrations build exactly the tables the code declares (store.py), and the latest
one upgrades a database that already holds a closed period's roll-forward, and downgrades, on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.common.db import Database, DatabaseOptions
from services.settlement.server import MIGRATIONS, VERSION_TABLE
from services.settlement.store import metadata
from tests.support.databases import new_database_url
from tests.support.migrations import differences_from, migrate


def _migrate(database: Database, revision: str, down: bool = False) -> None:
    migrate(database, MIGRATIONS, VERSION_TABLE, revision, down)


@pytest.fixture
def database(backend, tmp_path):
    url, cleanup = new_database_url(backend, tmp_path, "settlement")
    database = Database(DatabaseOptions(url))
    yield database
    database.dispose()
    cleanup()


def test_the_migrations_build_the_tables_the_code_declares(database):
    _migrate(database, "head")
    assert differences_from(database, metadata, VERSION_TABLE) == []


def test_a_roll_forward_closed_before_reinstated_existed_reads_zero_reinstated_and_still_adds_up(database):
    _migrate(database, "0002")
    with database.writer.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO settlement_periods (period_id, start_us, end_us, state, last_commit_sequence,"
                " close_time_us) VALUES ('2026-01', 1, 2, 'CLOSED', 7, 3)"
            )
        )
        # A reinstatement of 5 was counted in other_adjustments before this revision.
        connection.execute(
            text(
                "INSERT INTO settlement_roll_forwards (period_id, currency_code, opening_outstanding, issued,"
                " earn_reversed, redeemed, redemption_reversed, expired, converted_in, converted_out,"
                " other_adjustments, closing_outstanding)"
                " VALUES ('2026-01', 'PTS', 0, 100, 0, 0, 0, 20, 0, 0, 5, 85)"
            )
        )
    _migrate(database, "head")
    with database.writer.connect() as connection:
        row = connection.execute(
            text("SELECT expired, reinstated, other_adjustments, closing_outstanding FROM settlement_roll_forwards")
        ).one()
    assert tuple(row) == (20, 0, 5, 85)
    _migrate(database, "0002", down=True)
    _migrate(database, "head")
    with database.writer.connect() as connection:
        assert connection.execute(text("SELECT reinstated FROM settlement_roll_forwards")).scalar_one() == 0
