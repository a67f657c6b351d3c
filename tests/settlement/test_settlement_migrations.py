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


def test_a_statement_closed_before_breakage_lines_existed_reads_the_same_after_0004(database):
    from services.settlement import store

    _migrate(database, "0003")
    with database.writer.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO settlement_price_agreements (agreement_id, partner_id, valid_from_us, prices_json,"
                " create_time_us) VALUES ('a1', 'fuel', 0,"
                ' \'{"conversion_prices": [], "point_prices": [["PTS", "0.01", "0.008"]]}\', 1)'
            )
        )
        connection.execute(
            text(
                "INSERT INTO settlement_periods (period_id, start_us, end_us, state, last_commit_sequence,"
                " close_time_us) VALUES ('2026-01', 1, 2, 'CLOSED', 7, 3)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO settlement_statements (period_id, partner_id, net_cents, settlement_transfer_id)"
                " VALUES ('2026-01', 'fuel', 500, 'settlement:2026-01:fuel')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO settlement_statement_lines (period_id, partner_id, line_number, kind, currency_code,"
                " counterparty_currency_code, counterparty_id, quantity, unit_price, amount_cents, agreement_id,"
                " prior_period_adjustment) VALUES ('2026-01', 'fuel', 1, 'POINTS_ISSUED', 'PTS', '', '', 50000,"
                " '0.01', 500, 'a1', false)"
            )
        )
    _migrate(database, "head")
    with database.writer.connect() as connection:
        settlement, state = store.load_period(connection, "2026-01")
        (agreement,) = store.all_agreements(connection)
    (statement,) = settlement.statements
    (line,) = statement.lines
    assert (state, statement.net_cents, line.quantity, line.amount_cents) == ("CLOSED", 500, 50000, 500)
    assert (line.expired_quantity, line.reinstated_quantity, line.breakage_owner) == (0, 0, None)
    assert agreement.breakage_owner.value == "OPERATOR"
    # A breakage line may net to zero or below from 0004 on; a points line still may not.
    with database.writer.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO settlement_statement_lines (period_id, partner_id, line_number, kind, currency_code,"
                " counterparty_currency_code, counterparty_id, quantity, unit_price, amount_cents, agreement_id,"
                " prior_period_adjustment, expired_quantity, reinstated_quantity, breakage_owner) VALUES"
                " ('2026-01', 'fuel', 2, 'BREAKAGE', 'PTS', '', '', -20, '0', 0, 'a1', false, 0, 20, 'OPERATOR')"
            )
        )
    with pytest.raises(Exception), database.writer.begin() as connection:  # noqa: B017 (either driver's error)
        connection.execute(
            text(
                "INSERT INTO settlement_statement_lines (period_id, partner_id, line_number, kind, currency_code,"
                " counterparty_currency_code, counterparty_id, quantity, unit_price, amount_cents, agreement_id,"
                " prior_period_adjustment) VALUES ('2026-01', 'fuel', 3, 'POINTS_ISSUED', 'PTS', '', '', 0,"
                " '0.01', 0, 'a1', false)"
            )
        )
    # Going back below 0004 is refused while a BREAKAGE line exists, and works without one.
    with pytest.raises(RuntimeError):
        _migrate(database, "0003", down=True)
    with database.writer.begin() as connection:
        connection.execute(text("DELETE FROM settlement_statement_lines WHERE kind = 'BREAKAGE'"))
    _migrate(database, "0003", down=True)
    _migrate(database, "head")


def test_statements_and_agreements_from_before_tier_bonus_funders_read_the_same_after_0005(database):
    from services.settlement import store

    _migrate(database, "0004")
    with database.writer.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO settlement_price_agreements (agreement_id, partner_id, valid_from_us, prices_json,"
                " create_time_us, breakage_owner) VALUES ('a1', 'fuel', 0,"
                ' \'{"conversion_prices": [], "point_prices": [["PTS", "0.01", "0.008"]]}\', 1, \'ISSUING_PARTNER\')'
            )
        )
        connection.execute(
            text(
                "INSERT INTO settlement_periods (period_id, start_us, end_us, state, last_commit_sequence,"
                " close_time_us) VALUES ('2026-01', 1, 2, 'CLOSED', 7, 3)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO settlement_statements (period_id, partner_id, net_cents, settlement_transfer_id)"
                " VALUES ('2026-01', 'fuel', 480, 'settlement:2026-01:fuel')"
            )
        )
        # An issuance bill that included tier bonus points (the partner paid for them) and a breakage line.
        connection.execute(
            text(
                "INSERT INTO settlement_statement_lines (period_id, partner_id, line_number, kind, currency_code,"
                " counterparty_currency_code, counterparty_id, quantity, unit_price, amount_cents, agreement_id,"
                " prior_period_adjustment, expired_quantity, reinstated_quantity, breakage_owner) VALUES"
                " ('2026-01', 'fuel', 1, 'POINTS_ISSUED', 'PTS', '', '', 50000, '0.01', 500, 'a1', false, 0, 0, ''),"
                " ('2026-01', 'fuel', 2, 'BREAKAGE', 'PTS', '', '', 2000, '0.01', -20, 'a1', false, 2000, 0,"
                " 'ISSUING_PARTNER')"
            )
        )
    _migrate(database, "head")
    with database.writer.connect() as connection:
        settlement, state = store.load_period(connection, "2026-01")
        (agreement,) = store.all_agreements(connection)
    (statement,) = settlement.statements
    assert (state, statement.net_cents, statement.settlement_transfer_id) == ("CLOSED", 480, "settlement:2026-01:fuel")
    assert [
        (line.kind.value, line.quantity, str(line.unit_price), line.amount_cents, line.expired_quantity)
        for line in statement.lines
    ] == [("POINTS_ISSUED", 50000, "0.01", 500, 0), ("BREAKAGE", 2000, "0.01", -20, 2000)]
    assert all(
        (line.tier_bonus_issued_quantity, line.tier_bonus_reversed_quantity, line.tier_bonus_funder) == (0, 0, None)
        for line in statement.lines
    )
    assert (agreement.tier_bonus_funder.value, agreement.breakage_owner.value) == ("PARTNER", "ISSUING_PARTNER")
    # A tier bonus line may net to zero or below from 0005 on.
    with database.writer.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO settlement_statement_lines (period_id, partner_id, line_number, kind, currency_code,"
                " counterparty_currency_code, counterparty_id, quantity, unit_price, amount_cents, agreement_id,"
                " prior_period_adjustment, tier_bonus_issued_quantity, tier_bonus_reversed_quantity,"
                " tier_bonus_funder) VALUES ('2026-01', 'fuel', 3, 'TIER_BONUS', 'PTS', '', '', -40, '0.0125', 50,"
                " 'a1', false, 0, 40, 'OPERATOR')"
            )
        )
    # Going back below 0005 is refused while a TIER_BONUS line exists or an agreement has the
    # operator fund the bonus, and works without either.
    with pytest.raises(RuntimeError):
        _migrate(database, "0004", down=True)
    with database.writer.begin() as connection:
        connection.execute(text("DELETE FROM settlement_statement_lines WHERE kind = 'TIER_BONUS'"))
        connection.execute(text("UPDATE settlement_price_agreements SET tier_bonus_funder = 'OPERATOR'"))
    with pytest.raises(RuntimeError):
        _migrate(database, "0004", down=True)
    with database.writer.begin() as connection:
        connection.execute(text("UPDATE settlement_price_agreements SET tier_bonus_funder = 'PARTNER'"))
    _migrate(database, "0004", down=True)
    with database.writer.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM settlement_statement_lines")).scalar_one() == 2
    _migrate(database, "head")
    assert differences_from(database, metadata, VERSION_TABLE) == []
