"""Database plumbing shared by the services: engines, retried transactions, migrations.

PostgreSQL runs READ COMMITTED with explicit row locks taken in a fixed order; SQLite (the
zero-setup default) takes its single write lock up front with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from services.common import pg_dialect, sql

_log = structlog.get_logger("db")
T = TypeVar("T")

TRANSACTION_ATTEMPTS_MAX = 8
RETRY_BACKOFF_SECONDS_BASE = 0.002
RETRY_BACKOFF_SECONDS_MAX = 0.2
# Serialization failure, deadlock, lock timeout: safe to run the whole unit of work again.
_RETRYABLE_PGCODES = {"40001", "40P01", "55P03"}
_UNIQUE_VIOLATION_PGCODE = "23505"


@dataclass(frozen=True, slots=True)
class DatabaseOptions:
    url: str
    pool_size: int = 8
    statement_timeout_ms: int = 15_000
    lock_timeout_ms: int = 10_000
    pool_timeout_seconds: int = 10


class Database:
    """A writer engine and a reader engine (the same one on PostgreSQL)."""

    def __init__(self, options: DatabaseOptions) -> None:
        self.options = options
        # Called once per unit of work run again (services/common/metrics.py counts them); None: nothing.
        self.on_retry: Callable[[], object] | None = None
        self.url = make_url(options.url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.writer = _sqlite_engine(options, immediate=True)
            self.reader = _sqlite_engine(options, immediate=False)
        else:
            self.writer = _postgres_engine(options, "READ COMMITTED")
            # Reads that take several statements (a trial balance and its sequence) see one snapshot.
            self.reader = _postgres_engine(options, "REPEATABLE READ")

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

    def write(self, work: Callable[[Connection], T], *, retry_unique_violation: bool = False) -> T:
        return run_transaction(self.writer, work, retry_unique_violation=retry_unique_violation, on_retry=self.on_retry)

    def read(self, work: Callable[[Connection], T]) -> T:
        return run_transaction(self.reader, work, on_retry=self.on_retry)

    def read_statement(self, work: Callable[[Connection], T]) -> T:
        """A read of one statement, outside any transaction: no BEGIN and COMMIT round trips.
        Only for work that runs a single statement (one statement always sees one snapshot). On
        SQLite, whose BEGIN is ours (`_on_begin`), it is an ordinary read."""
        if self.is_sqlite:
            return self.read(work)
        for attempt in range(1, TRANSACTION_ATTEMPTS_MAX + 1):
            try:
                with self.reader.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    return work(connection)
            except sa_exc.DBAPIError as error:
                # A pooled connection the database dropped (a restart): another one, as run_transaction does.
                if not error.connection_invalidated or attempt == TRANSACTION_ATTEMPTS_MAX:
                    raise
        raise AssertionError("unreachable")


def _sqlite_engine(options: DatabaseOptions, immediate: bool) -> Engine:
    database = make_url(options.url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        options.url,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=options.pool_size,
        max_overflow=0,
        pool_timeout=options.pool_timeout_seconds,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Take transaction control away from pysqlite so BEGIN is ours (SQLAlchemy docs, "Serializable isolation").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgres_engine(options: DatabaseOptions, isolation_level: str) -> Engine:
    url = make_url(options.url)
    server_options = (
        f"-c statement_timeout={options.statement_timeout_ms} -c lock_timeout={options.lock_timeout_ms}"
        " -c idle_in_transaction_session_timeout=60000"
        # The services' hot rows live in memory: the default of 4 prices each index probe as a
        # disk seek, so a batch's lookup of 27 balances among 4,000 scanned the whole table
        # (0.4 ms, on every batch). 1.1 is the usual figure for data in RAM or on SSD. A URL's
        # own options come after this one and win.
        " -c random_page_cost=1.1"
    )
    if url.drivername in ("postgresql", "postgresql+psycopg2"):  # psycopg2 is the driver installed
        url = url.set(drivername=f"postgresql+{pg_dialect.DRIVER_NAME}")
    # A schema can come with the URL (?options=-csearch_path%3Dname) or from the environment.
    extra = url.query.get("options", "")
    if extra:
        server_options += " " + (extra if isinstance(extra, str) else " ".join(extra))
        url = url.difference_update_query(["options"])
    search_path = os.environ.get("COALITION_DATABASE_SCHEMA", "")
    if search_path:
        server_options += f" -c search_path={search_path}"
    return create_engine(
        url,
        pool_size=options.pool_size,
        max_overflow=0,
        pool_timeout=options.pool_timeout_seconds,
        # No pre-ping round trip per checkout: a dead connection fails the unit of work, which is
        # retried on a fresh one (every unit of work here is idempotent).
        pool_recycle=1800,
        isolation_level=isolation_level,
        # An UPDATE or DELETE run for many rows goes in pages of statements per round trip, not
        # one round trip per row (inserts already go as one multi-row VALUES).
        executemany_mode="values_plus_batch",
        executemany_batch_page_size=500,
        connect_args={"options": server_options, "connect_timeout": 5},
    )


def _is_retryable(error: sa_exc.DBAPIError, retry_unique_violation: bool) -> bool:
    pgcode = getattr(error.orig, "pgcode", None)
    if pgcode in _RETRYABLE_PGCODES:
        return True
    if retry_unique_violation and pgcode == _UNIQUE_VIOLATION_PGCODE:
        return True
    message = str(error.orig).lower()
    if "database is locked" in message:
        return True
    return retry_unique_violation and "unique constraint failed" in message


def run_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    retry_unique_violation: bool = False,
    on_retry: Callable[[], object] | None = None,
) -> T:
    """Run `work` in one transaction, retrying the whole unit on deadlock or serialization failure
    (`on_retry` is called before each new attempt)."""
    for attempt in range(1, TRANSACTION_ATTEMPTS_MAX + 1):
        try:
            with engine.begin() as connection:
                try:
                    return work(connection)
                except sa_exc.DBAPIError as error:
                    if sql.lost_prepared_statement(error.orig):
                        connection.invalidate()  # a new session, which prepares anew; the unit goes again
                    raise
        except sa_exc.DBAPIError as error:
            retryable = (
                error.connection_invalidated
                or sql.lost_prepared_statement(error.orig)
                or _is_retryable(error, retry_unique_violation)
            )
            if not retryable:
                raise
            if attempt == TRANSACTION_ATTEMPTS_MAX:
                raise
            delay = min(RETRY_BACKOFF_SECONDS_MAX, RETRY_BACKOFF_SECONDS_BASE * 2**attempt)
            _log.info("transaction_retried", attempt=attempt, error=type(error.orig).__name__)
            if on_retry is not None:
                on_retry()
            time.sleep(delay * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")


def open_migrated(options: DatabaseOptions, script_location: str, version_table: str) -> Database:
    """A service's database, its schema brought up to date first."""
    database = Database(options)
    migrate(database, script_location, version_table)
    return database


def migrate(database: Database, script_location: str, version_table: str) -> None:
    """Bring the schema up to date. Concurrent starters on PostgreSQL serialise on an advisory lock."""
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    with database.writer.begin() as connection:
        if not database.is_sqlite:
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": version_table})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def run_migrations_from_env(context) -> None:
    """Body of each service's alembic env.py: use the connection handed over by migrate()."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through services.common.db.migrate or `make migrate`")
    context.configure(
        connection=connection,
        version_table=config.attributes["version_table"],
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
