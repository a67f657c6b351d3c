"""Test databases: a fresh SQLite file or a fresh PostgreSQL schema per use.

PostgreSQL comes from COALITION_TEST_DATABASE_URL. When no server answers, PostgreSQL tests are
skipped with the reason, unless COALITION_REQUIRE_POSTGRES=1 (CI), where they fail instead.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    return os.environ.get("COALITION_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL


def postgres_required() -> bool:
    return os.environ.get("COALITION_REQUIRE_POSTGRES") == "1"


@functools.cache
def postgres_unavailable_reason() -> str:
    try:
        engine = create_engine(postgres_url(), connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return ""
    except Exception as error:  # any failure to connect means "not available"
        return f"PostgreSQL at {postgres_url()} is not reachable: {type(error).__name__}: {error}".splitlines()[0]


def require_postgres() -> None:
    reason = postgres_unavailable_reason()
    if not reason:
        return
    if postgres_required():
        pytest.fail(f"COALITION_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def url_with_schema(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"


DROP_ATTEMPTS_MAX = 10


class PostgresSchema:
    """A throwaway schema, so tests run in parallel without seeing each other's rows."""

    def __init__(self, prefix: str = "t") -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.url = url_with_schema(postgres_url(), self.name)
        self._admin = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{self.name}"'))

    def drop(self) -> None:
        # A server cut off from the database (fault tests) can leave a backend that still holds
        # locks in the schema until PostgreSQL notices its client is gone: the DROP may then be
        # chosen as a deadlock's victim, and simply goes again.
        for attempt in range(DROP_ATTEMPTS_MAX):
            try:
                with self._admin.connect() as connection:
                    connection.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
                break
            except OperationalError:
                if attempt == DROP_ATTEMPTS_MAX - 1:
                    raise
                time.sleep(0.5)
        self._admin.dispose()


def new_database_url(backend: str, directory, name: str = "ledger"):
    """Returns (url, cleanup)."""
    if backend == "sqlite":
        return f"sqlite:///{directory}/{name}-{uuid.uuid4().hex[:8]}.db", lambda: None
    require_postgres()
    schema = PostgresSchema(name)
    return schema.url, schema.drop
