"""The partners migrations build exactly the tables the code declares (store/tables.py), and the
latest ones upgrade a database that already holds rows, and downgrade, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.common.db import Database, DatabaseOptions
from services.partners.server import MIGRATIONS
from services.partners.store.tables import metadata
from tests.support.databases import new_database_url
from tests.support.migrations import differences_from, insert_partner_and_member, migrate

VERSION_TABLE = "alembic_version_partners"


def _migrate(database: Database, revision: str, down: bool = False) -> None:
    migrate(database, MIGRATIONS, VERSION_TABLE, revision, down)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    url, cleanup = new_database_url(request.param, tmp_path, "partners")
    database = Database(DatabaseOptions(url))
    yield database
    database.dispose()
    cleanup()


def test_the_migrations_build_the_tables_the_code_declares(database):
    _migrate(database, "head")
    assert differences_from(database, metadata, VERSION_TABLE) == []


def test_the_latest_migrations_keep_existing_rows_and_go_down_and_up_again(database):
    _migrate(database, "0005")
    with database.writer.begin() as connection:
        insert_partner_and_member(connection)
        connection.execute(
            text(
                "INSERT INTO earns (earn_id, partner_id, request_id, fingerprint, receipt_id, store_id, terminal_id,"
                " member_id, currency_code, points, exact_points, bonus_points, promotion_applied, capped,"
                " rule_version, state, occur_time_us, create_time_us)"
                " VALUES ('earn:shop:r1', 'shop', 'r1', 'f', 'receipt-1', 's', 't', 'm-1', 'PTS', 5, '5', 0,"
                " false, false, 1, 'failed', 1, 1)"
            )
        )
    _migrate(database, "head")
    with database.writer.begin() as connection:
        row = connection.execute(text("SELECT recovery_attempts, next_recovery_us FROM earns")).one()
        assert tuple(row) == (0, 0)
        # The refused earn no longer holds its receipt.
        connection.execute(
            text(
                "INSERT INTO earns (earn_id, partner_id, request_id, fingerprint, receipt_id, store_id, terminal_id,"
                " member_id, currency_code, points, exact_points, bonus_points, promotion_applied, capped,"
                " rule_version, state, occur_time_us, create_time_us)"
                " VALUES ('earn:shop:r2', 'shop', 'r2', 'f', 'receipt-1', 's', 't', 'm-1', 'PTS', 5, '5', 0,"
                " false, false, 1, 'posted', 1, 2)"
            )
        )
        # Going back to one earn per receipt needs the receipt's earns to be one again.
        connection.execute(text("DELETE FROM earns WHERE earn_id = 'earn:shop:r2'"))
    _migrate(database, "0005", down=True)
    _migrate(database, "head")
    with database.writer.connect() as connection:
        assert connection.execute(text("SELECT earn_id, recovery_attempts FROM earns")).all() == [("earn:shop:r1", 0)]
        # Earns from before tiers (0008) were priced without one and counted nothing.
        tier = text("SELECT tier_name, tier_multiplier, tier_bonus_points, tier_month FROM earns")
        assert tuple(connection.execute(tier).one()) == ("", "1", 0, 0)


def test_the_recovery_pass_finds_each_kinds_due_rows_through_its_unfinished_rows_index(database):
    """The partial index's predicate and the pass's query must agree, or the pass scans the table."""
    from sqlalchemy import event

    from services.partners.store import recovery

    _migrate(database, "head")
    postgres = database.writer.dialect.name == "postgresql"
    seen = []

    def capture(_connection, _cursor, statement, parameters, _context, _executemany):
        seen.append((statement, parameters))

    for kind, unfinished in recovery.KINDS.items():
        seen.clear()
        with database.writer.begin() as connection:
            event.listen(connection, "before_cursor_execute", capture)
            recovery.due(connection, kind, since_before_us=5, now_us=10, limit=10)
            event.remove(connection, "before_cursor_execute", capture)
            ((statement, parameters),) = seen
            if postgres:
                connection.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a table this small would be scanned
                plan = " ".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))
            else:
                plan = " ".join(
                    row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                )
        assert f"ix_{unfinished.table.name}_unfinished" in plan, (kind, plan)


def test_an_earn_batchs_read_finds_its_earns_through_the_request_and_receipt_indexes(database):
    """The batch's one read (by request ids or receipts) must stay two index lookups as a
    partner's earns grow, on each database's own statistics."""
    from sqlalchemy import event

    from services.partners.store import earns

    _migrate(database, "head")
    with database.writer.begin() as connection:
        insert_partner_and_member(connection)
        connection.execute(
            text(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 4000)"
                " INSERT INTO earns (earn_id, partner_id, request_id, fingerprint, receipt_id, store_id,"
                " terminal_id, member_id, currency_code, points, exact_points, bonus_points, promotion_applied,"
                " capped, rule_version, state, occur_time_us, create_time_us)"
                " SELECT 'e' || n, 'shop', 'r' || n, 'f', 'rc' || n, 's', 't', 'm-1', 'PTS', 1, '1', 0,"
                " false, false, 1, 'posted', 1, 1 FROM g"
            )
        )
        connection.execute(text("ANALYZE"))
    seen = []

    def capture(_connection, _cursor, statement, parameters, _context, _executemany):
        seen.append((statement, parameters))

    requests = {("shop", f"r{n}") for n in range(1, 60, 7)} | {("shop", "new-request")}
    receipts = {("shop", f"rc{n}") for n in range(1, 60, 7)} | {("shop", "new-receipt")}
    with database.writer.begin() as connection:
        event.listen(connection, "before_cursor_execute", capture)
        by_request, by_receipt = earns.earns_by_requests_or_receipts(connection, requests, receipts)
        event.remove(connection, "before_cursor_execute", capture)
        ((statement, parameters),) = seen
        if database.writer.dialect.name == "postgresql":
            plan = " ".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))
            used = "uq_earns_request" in plan and "uq_earns_receipt" in plan
        else:
            plan = " ".join(
                row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            )
            used = "uq_earns_receipt" in plan and "sqlite_autoindex_earns" in plan and "SCAN earns" not in plan
    assert used, plan
    assert len(by_request) == len(by_receipt) == 9
