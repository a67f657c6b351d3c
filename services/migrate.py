"""`make migrate`: bring every service's schema up to date (each service also does this on start)."""

from __future__ import annotations

import os

from services.common.config import env_str
from services.common.db import Database, DatabaseOptions, migrate

SERVICES = (
    ("ledger", "COALITION_LEDGER_DATABASE_URL"),
    ("partners", "COALITION_PARTNERS_DATABASE_URL"),
    ("settlement", "COALITION_SETTLEMENT_DATABASE_URL"),
)


def main() -> None:
    for name, variable in SERVICES:
        url = env_str(variable, f"sqlite:///var/{name}.db")
        database = Database(DatabaseOptions(url=url))
        try:
            migrate(database, os.path.join(os.path.dirname(__file__), name, "migrations"), f"alembic_version_{name}")
        finally:
            database.dispose()
        print(f"{name}: schema up to date ({database.url.render_as_string(hide_password=True)})")


if __name__ == "__main__":
    main()
