"""A big batch COPYs its rows (services/ledger/store.py): the driver's errors still arrive as
SQLAlchemy's, which the transaction's retry and the batcher's fallbacks tell apart."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from services.common.db import DatabaseOptions, open_migrated
from services.ledger import store
from services.ledger.server import MIGRATIONS
from tests.support.databases import new_database_url

ENTRY = ("wallet:PTS:m-1", 1, 1, 1, 5, 0, 1, 5, 0, 0, 0)


def test_a_copy_that_breaks_a_unique_key_raises_sqlalchemys_integrity_error(tmp_path):
    url, cleanup = new_database_url("postgres", tmp_path, "copy")
    database = open_migrated(DatabaseOptions(url), MIGRATIONS, "alembic_version_ledger")
    try:
        database.write(lambda c: store._insert_rows(c, store.entries, store._ENTRY_INSERT_COLUMNS, [ENTRY]))
        with pytest.raises(sa_exc.IntegrityError):
            database.write(lambda c: store._insert_rows(c, store.entries, store._ENTRY_INSERT_COLUMNS, [ENTRY]))
    finally:
        database.dispose()
        cleanup()
