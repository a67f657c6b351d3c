"""The shared statement shapes (services/common/sql.py) give the same rows on both databases."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table

from services.common.db import Database, DatabaseOptions
from services.common.sql import OneTrip, Prepared, insert_many, json_insert, json_update, update_many, upsert_many
from tests.support.databases import new_database_url

_metadata = MetaData()
_holds = Table(
    "sql_shape_holds",
    _metadata,
    Column("hold_id", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("note", String(32), nullable=True),
)
_notes = Table(
    "sql_shape_notes",
    _metadata,
    Column("hold_id", String(32), primary_key=True),
    Column("line", BigInteger, primary_key=True),
    Column("text", String(64), nullable=True),
)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    url, cleanup = new_database_url(request.param, tmp_path, "sqlshape")
    database = Database(DatabaseOptions(url))
    _metadata.create_all(database.writer)
    yield database
    database.dispose()
    cleanup()


def test_update_many_changes_only_the_rows_its_condition_admits_and_returns_every_row_asked(database):
    database.write(
        lambda c: insert_many(
            c,
            _holds,
            [
                {"hold_id": "a", "state": "pending", "amount": 1, "note": None},
                {"hold_id": "b", "state": "pending", "amount": 2, "note": None},
                {"hold_id": "c", "state": "voided", "amount": 3, "note": None},
            ],
        )
    )
    changes = [
        {"hold_id": "a", "state": "held", "note": "first"},
        {"hold_id": "b", "state": "held", "note": "second"},
        {"hold_id": "c", "state": "held", "note": "third"},
        {"hold_id": "nobody", "state": "held", "note": "absent"},
    ]
    rows = database.write(lambda c: update_many(c, _holds, "hold_id", changes, only_if={"state": "pending"}))
    assert {key: (row.state, row.amount, row.note) for key, row in rows.items()} == {
        "a": ("held", 1, "first"),
        "b": ("held", 2, "second"),
        "c": ("voided", 3, None),  # its condition did not hold: as it was
    }
    assert database.write(lambda c: update_many(c, _holds, "hold_id", [])) == {}
    again = database.write(lambda c: update_many(c, _holds, "hold_id", [{"hold_id": "c", "amount": 30}]))
    assert (again["c"].state, again["c"].amount) == ("voided", 30)


def test_upsert_many_inserts_new_keys_and_sets_the_other_columns_of_existing_ones(database):
    database.write(lambda c: insert_many(c, _holds, [{"hold_id": "a", "state": "pending", "amount": 1, "note": "x"}]))
    rows = [
        {"hold_id": "a", "state": "held", "amount": 10},
        {"hold_id": "b", "state": "pending", "amount": 2},
    ]
    database.write(lambda c: upsert_many(c, _holds, ("hold_id",), rows))
    found = database.read(lambda c: c.execute(_holds.select().order_by(_holds.c.hold_id)).all())
    assert [(r.hold_id, r.state, r.amount, r.note) for r in found] == [
        ("a", "held", 10, "x"),
        ("b", "pending", 2, None),
    ]


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # OneTrip is PostgreSQL's
def test_one_trip_sends_its_statements_in_order_and_a_failure_undoes_them_all(database):
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    holds = [{"hold_id": "a", "state": "pending", "amount": 1, "note": "50% off; it's %(x)s"}]
    notes = [{"hold_id": "a", "line": 1, "text": "tab\there"}, {"hold_id": "a", "line": 2, "text": None}]

    def write(connection, *batches, then=None):
        trip = OneTrip(connection)
        for table, rows in batches:
            trip.add(*json_insert(table, rows))
        if then:
            trip.add(*then)
        trip.send()

    database.write(
        lambda c: write(
            c, (_holds, holds), (_notes, notes), then=("DELETE FROM sql_shape_notes WHERE line = %(line)s", {"line": 2})
        )
    )
    with pytest.raises(sa_exc.IntegrityError):  # the last statement's conflict undoes the first one's row
        database.write(lambda c: write(c, (_holds, [{**holds[0], "hold_id": "c"}]), (_notes, notes[:1])))
    read = database.read(lambda c: (c.execute(select(_holds)).all(), c.execute(select(_notes)).all()))
    assert [tuple(row) for row in read[0]] == [("a", "pending", 1, "50% off; it's %(x)s")]
    assert [tuple(row) for row in read[1]] == [("a", 1, "tab\there")]


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # json_update goes in a OneTrip
def test_json_update_sets_each_row_by_its_whole_key_and_leaves_the_other_columns(database):
    from sqlalchemy import select

    notes = [{"hold_id": hold, "line": line, "text": f"{hold}{line}"} for hold in "ab" for line in (1, 2)]
    database.write(lambda c: insert_many(c, _notes, notes))

    def update(connection):
        trip = OneTrip(connection)
        changes = [{"hold_id": "a", "line": 2, "text": "50% it's"}, {"hold_id": "b", "line": 1, "text": None}]
        trip.add(*json_update(_notes, ("hold_id", "line"), changes))
        trip.send()

    database.write(update)
    rows = database.read(lambda c: c.execute(select(_notes).order_by(_notes.c.hold_id, _notes.c.line)).all())
    assert [tuple(row) for row in rows] == [("a", 1, "a1"), ("a", 2, "50% it's"), ("b", 1, None), ("b", 2, "b2")]


def _plan_of_each_statement(database: Database, work) -> list[str]:
    """The plans PostgreSQL chose for the statements `work` ran, explained as they were sent
    (in a transaction rolled back, under the default random_page_cost of 4 where asked)."""
    from sqlalchemy import event

    sent: list[tuple[str, object]] = []

    def capture(_connection, _cursor, statement, parameters, _context, _executemany):
        sent.append((statement, parameters))

    event.listen(database.writer, "before_cursor_execute", capture)
    try:
        with database.writer.begin() as connection:
            work(connection)
            connection.rollback()
    finally:
        event.remove(database.writer, "before_cursor_execute", capture)
    plans = []
    with database.writer.begin() as connection:
        for statement, parameters in sent:
            if statement.startswith("SET "):
                connection.exec_driver_sql(statement, parameters)
                continue
            rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in rows))
        connection.rollback()
    return plans


def _grown(database: Database, rows: int) -> None:
    """`rows` rows in each table, stored in no order of their keys (as accounts and holds are)."""
    import random

    order = list(range(rows))
    random.Random(8).shuffle(order)
    holds = [{"hold_id": f"h{n:06}", "state": "pending", "amount": n, "note": "n" * 32} for n in order]
    notes = [{"hold_id": f"h{n:06}", "line": 1, "text": None} for n in range(rows)]
    database.write(lambda c: (insert_many(c, _holds, holds), insert_many(c, _notes, notes)))
    with database.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE sql_shape_holds")
        connection.exec_driver_sql("ANALYZE sql_shape_notes")


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_batch_update_finds_its_few_rows_by_the_key_index_not_by_scanning_the_table(database):
    """A set-returning function is estimated at 100 rows: without the exact count, PostgreSQL
    hashes a batch of three and scans the whole table (0.8 ms at 5,000 rows) to join it."""
    _grown(database, 5_000)
    changes = [{"hold_id": f"h{n:06}", "state": "held"} for n in (7, 1_234, 4_321)]
    note_changes = [{"hold_id": f"h{n:06}", "line": 1, "text": "x"} for n in (7, 1_234, 4_321)]

    def work(connection):
        connection.exec_driver_sql("SET LOCAL random_page_cost = 4")  # the plan, not the session's costs
        update_many(connection, _holds, "hold_id", changes, only_if={"state": "pending"})
        connection.exec_driver_sql(*json_update(_notes, ("hold_id", "line"), note_changes))

    plans = [plan for plan in _plan_of_each_statement(database, work) if plan.startswith("Update")]
    assert len(plans) == 2
    for plan in plans:
        assert "Index Scan using" in plan and "Seq Scan on sql_shape" not in plan, plan


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_the_services_sessions_price_an_index_probe_as_the_cached_read_it_is(database):
    """The default random_page_cost (4, a disk seek) makes a lookup of 27 balances among 4,000
    scan the table, as a ledger batch's lock did on every batch; the services' sessions say 1.1."""
    with database.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(
            "CREATE TABLE sql_shape_balances (account_id varchar(64) PRIMARY KEY, debits bigint NOT NULL,"
            " credits bigint NOT NULL, debits_pending bigint NOT NULL, credits_pending bigint NOT NULL)"
        )
        connection.exec_driver_sql(
            "INSERT INTO sql_shape_balances SELECT 'wallet:PTS:m-' || md5(n::text), 0, 0, 0, 0"
            " FROM generate_series(1, 4000) AS n"
        )
        connection.exec_driver_sql("ANALYZE sql_shape_balances")
    keys = ["wallet:PTS:m-" + hashlib.md5(str(n).encode()).hexdigest() for n in range(1, 28)]

    def lock(connection, costs: str = ""):
        if costs:
            connection.exec_driver_sql(f"SET LOCAL random_page_cost = {costs}")
        connection.exec_driver_sql(
            "SELECT * FROM sql_shape_balances WHERE account_id = ANY(%(keys)s::varchar[])", {"keys": keys}
        )

    (default_plan,) = _plan_of_each_statement(database, lambda c: lock(c, "4"))
    assert default_plan.startswith("Seq Scan"), default_plan  # what this test guards against
    (plan,) = _plan_of_each_statement(database, lock)
    assert "Index Scan" in plan and "Seq Scan" not in plan, plan  # a plain or a bitmap index scan


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # PREPARE is PostgreSQL's
def test_a_prepared_statement_is_planned_once_per_connection_and_outlives_a_failed_transaction(database):
    from sqlalchemy import event

    insert_many_rows = [{"hold_id": f"h{n}", "state": "open", "amount": n, "note": None} for n in range(1, 6)]
    database.write(lambda c: insert_many(c, _holds, insert_many_rows))
    amounts = Prepared(
        "sql_shape_amounts",
        "SELECT hold_id, amount + %(extra)s FROM sql_shape_holds WHERE hold_id = ANY(%(ids)s) ORDER BY hold_id",
        {"ids": "varchar[]", "extra": "bigint"},
    )
    sent: list[str] = []
    event.listen(database.writer, "before_cursor_execute", lambda *args: sent.append(args[2]))

    def run(connection, ids, extra):
        return connection.exec_driver_sql(amounts.text(connection), {"ids": ids, "extra": extra}).all()

    with database.writer.connect() as connection:
        with connection.begin():
            assert run(connection, ["h1", "h3"], 10) == [("h1", 11), ("h3", 13)]
        # A transaction that fails after using it (rolled back) leaves it prepared.
        with pytest.raises(Exception, match="division by zero"), connection.begin():
            run(connection, ["h2"], 0)
            connection.exec_driver_sql("SELECT 1 / 0")
        with connection.begin():
            assert run(connection, ["h2", "h4", "h5", "none"], 0) == [("h2", 2), ("h4", 4), ("h5", 5)]
            # Planned once, for any values: the generic plan is used from the first run.
            plan = connection.exec_driver_sql("EXPLAIN EXECUTE sql_shape_amounts(ARRAY['h1'], 0)").all()
            assert "$1" in "\n".join(row[0] for row in plan), plan
    assert sum(statement.startswith("PREPARE ") for statement in sent) == 1, sent
    assert sum("EXECUTE sql_shape_amounts (" in statement for statement in sent) == 3, sent
    with pytest.raises(ValueError, match="no type"):
        Prepared("untyped", "SELECT %(a)s + %(b)s", {"a": "bigint"})


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # PREPARE is PostgreSQL's
def test_a_session_that_lost_its_prepared_statements_prepares_them_again_and_the_work_goes_on(database):
    """A pooler resetting the server session (DEALLOCATE ALL) makes the next EXECUTE fail: the
    unit of work runs again and prepares anew, instead of failing on that connection for ever."""
    database.write(lambda c: insert_many(c, _holds, [{"hold_id": "h1", "state": "open", "amount": 7, "note": None}]))
    amount = Prepared(
        "sql_shape_amount", "SELECT amount FROM sql_shape_holds WHERE hold_id = ANY(%(ids)s)", {"ids": "varchar[]"}
    )
    attempts = []

    def work(connection):
        attempts.append(connection)
        statement = amount.text(connection)
        if len(attempts) == 1:
            connection.exec_driver_sql("DEALLOCATE ALL")
        return connection.exec_driver_sql(statement, {"ids": ["h1"]}).scalar_one()

    assert database.write(work) == 7
    assert len(attempts) == 2, attempts


@pytest.mark.parametrize("database", ["postgres"], indirect=True)  # PREPARE is PostgreSQL's
def test_a_prepared_statement_first_run_on_an_empty_table_still_looks_up_by_index_as_the_table_grows(database):
    """Its plan lives as long as the connection: made while the table was empty, it scanned the
    table whole on every run as it grew (the ledger's hold_resolutions, 1.2 ms at 5,000 rows)."""
    amounts = Prepared(
        "sql_shape_grown", "SELECT amount FROM sql_shape_holds WHERE hold_id = ANY(%(ids)s)", {"ids": "varchar[]"}
    )
    engine = Database(DatabaseOptions(database.options.url, pool_size=1))  # one session: one cached plan

    def run(connection):
        return connection.exec_driver_sql(amounts.text(connection), {"ids": ["h000007"]}).all()

    def cached_plan(connection):
        connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        return "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN EXECUTE sql_shape_grown ('{h000007}')"))

    try:
        with engine.writer.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE sql_shape_holds")  # known empty, as a fresh schema's tables
        assert engine.write(run) == []  # planned now, on the empty table
        rows = [{"hold_id": f"h{n:06}", "state": "pending", "amount": n, "note": "n" * 32} for n in range(5_000)]
        engine.write(lambda c: insert_many(c, _holds, rows))  # no ANALYZE: nothing replans
        assert engine.write(run) == [(7,)]
        plan = engine.write(cached_plan)
        assert "Index" in plan and "Seq Scan" not in plan, plan
    finally:
        engine.dispose()
