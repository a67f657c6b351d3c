"""Running one service's Alembic migrations in a test, and comparing them with its declared tables."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, text

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


def insert_partner_and_member(connection: Connection) -> None:
    """Partner `shop` and member `m-1` as bare rows (columns every partners schema version has),
    for tests that write earns straight into the tables."""
    connection.execute(
        text(
            "INSERT INTO partners (partner_id, kind, display_name, status, create_time_us, update_time_us)"
            " VALUES ('shop', 'retailer', 'Shop', 'active', 1, 1)"
        )
    )
    connection.execute(
        text(
            "INSERT INTO members (member_id, enroll_caller_id, enroll_request_id, create_time_us)"
            " VALUES ('m-1', 'operator', 'e-1', 1)"
        )
    )
