"""Running one service's Alembic migrations in a test, and comparing them with its declared tables."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from services.common.db import Database


def migrate(database: Database, script_location: str, version_table: str, revision: str, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    with database.writer.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def differences_from(database: Database, metadata: MetaData, version_table: str) -> list:
    """What the migrated schema lacks or has beyond `metadata` (the version table aside)."""
    with database.writer.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": version_table})
        return [
            difference
            for difference in compare_metadata(context, metadata)
            if not (difference[0] == "remove_table" and difference[1].name == version_table)
        ]
