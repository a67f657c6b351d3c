"""The commit clock (services/ledger/store.py): sequences follow on with no gap, and a commit
time never goes back, even when the time read under the lock does."""

from __future__ import annotations

import pytest

from services.common.db import DatabaseOptions, open_migrated
from services.ledger import store
from services.ledger.server import MIGRATIONS
from tests.support.databases import new_database_url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sequences_follow_on_and_commit_times_never_go_back(tmp_path, monkeypatch, backend):
    url, cleanup = new_database_url(backend, tmp_path, "clock")
    database = open_migrated(DatabaseOptions(url), MIGRATIONS, "alembic_version_ledger")

    def reserve(connection, count):
        clock = store.lock_clock_and_read_now(connection)
        trip = store.one_trip_for(connection, count)
        reserved = store.advance_clock(connection, clock, count, trip)
        if trip is not None:
            trip.send()
        return reserved

    try:
        hour_us = 3_600 * 1_000_000
        monkeypatch.setattr(store, "clock_offset_us", hour_us)
        first, late = database.write(lambda c: reserve(c, 3))
        monkeypatch.setattr(store, "clock_offset_us", 0)  # the time read now is an hour earlier
        second, after = database.write(lambda c: reserve(c, 2))
        third, _ = database.write(lambda c: reserve(c, 0))  # failures only: no sequence taken
        fourth, _ = database.write(lambda c: reserve(c, 1))
        assert (second, third, fourth) == (first + 3, first + 5, first + 5)
        assert after == late
        assert database.read(store.last_sequence) == first + 5
    finally:
        database.dispose()
        cleanup()
