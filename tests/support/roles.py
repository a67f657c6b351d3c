"""PostgreSQL roles for tests of production start-up: an owner, and a service's least-privilege
role granted by the very file operators run.

Each service's `migrations/grants.sql` names its role (`ledger_app`, `partners_app`,
`settlement_app`); a test gets roles of its own (roles are shared by every database of a
server), so the name is swapped for a unique one and the file is otherwise run as it is.
"""

from __future__ import annotations

import os
import re
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.databases import postgres_url, url_with_schema
from tests.support.servers import REPO_ROOT


def grants_path(service: str) -> str:
    return os.path.join(REPO_ROOT, "services", service, "migrations", "grants.sql")


class LoginRole:
    """A login role with a unique name; drop() takes it away with everything granted to it."""

    def __init__(self, prefix: str) -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._admin = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
        self.admin(f'CREATE ROLE "{self.name}" LOGIN')

    def admin(self, statement: str) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(statement))

    def url_in(self, schema: str) -> str:
        """The test database's URL, logged in as this role, with search_path set to `schema`."""
        as_role = make_url(postgres_url()).set(username=self.name, password=None)
        return url_with_schema(as_role.render_as_string(hide_password=False), schema)

    def drop(self) -> None:
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP OWNED BY "{self.name}"'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{self.name}"'))
        self._admin.dispose()


class ServiceRole(LoginRole):
    """`service`'s run-time role: USAGE on its schema and its grants.sql, run as an operator runs
    it: by the owner that migrated the schema (`owner_url`, its search_path set to the schema)."""

    def __init__(self, service: str, schema: str, owner_url: str) -> None:
        super().__init__(f"{service}_app")
        self.schema = schema
        self.url = self.url_in(schema)
        self.admin(f'GRANT USAGE ON SCHEMA "{schema}" TO "{self.name}"')
        with open(grants_path(service), encoding="utf-8") as file:
            grants = re.sub(rf"\b{service}_app\b", f'"{self.name}"', file.read())
        engine = create_engine(owner_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(grants)
        finally:
            engine.dispose()
