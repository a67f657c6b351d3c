"""Commit order under the ledger's locks: a batch's read under its locks (store.lock_and_read_batch,
on PostgreSQL one round trip with the locks) sees what the batch it waited for committed, and a
new expiry policy takes its effective time after the batches holding the clock."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from sqlalchemy import text

from services.common.db import DatabaseOptions, open_migrated
from services.ledger import expiry_policies, store
from services.ledger.lots import ExpiryPolicy, PolicyKind
from services.ledger.model import HoldState
from services.ledger.server import MIGRATIONS
from tests.support.databases import new_database_url

ACCOUNT = "acct-1"


def _seed(connection) -> None:
    connection.execute(text("INSERT INTO currencies VALUES ('PTS', 0, 'op', 0)"))
    connection.execute(text(f"INSERT INTO accounts VALUES ('{ACCOUNT}', 'PTS', 1, true, 'op', 'member', 0)"))
    connection.execute(text(f"INSERT INTO account_balances VALUES ('{ACCOUNT}', 1, true, 0, 0, 0, 0)"))
    connection.execute(text("INSERT INTO accounts VALUES ('acct-2', 'PTS', 2, false, 'op', 'issuer', 0)"))
    connection.execute(text("INSERT INTO expiry_policies VALUES ('PTS', 9, 3, 24, 0, 0, 60, 0)"))
    for sequence, transfer_id, kind in ((1, "hold-1", 1), (2, "void-1", 3), (3, "hold-2", 1)):
        connection.execute(
            text(
                "INSERT INTO transfers (sequence, id, debit_account_id, credit_account_id, amount, currency_code,"
                " kind, code, timeout_seconds, partner_id, store_id, terminal_id, receipt_id, member_id,"
                f" committed_at_us) VALUES ({sequence}, '{transfer_id}', 'acct-2', '{ACCOUNT}', 1, 'PTS', {kind},"
                " 1, 0, '', '', '', '', '', 0)"
            )
        )


def _commit_a_batch(connection) -> None:
    """What a batch holding the locks writes: a balance, the clock, a remembered failure, a void, a policy."""
    connection.execute(text(f"UPDATE account_balances SET debits_posted = 5 WHERE account_id = '{ACCOUNT}'"))
    connection.execute(text("UPDATE ledger_clock SET last_sequence = last_sequence + 3 WHERE id = 1"))
    connection.execute(text("INSERT INTO transfer_failures VALUES ('failed-1', '{}', 1, 'amount', 'refused', 0)"))
    connection.execute(text("INSERT INTO hold_resolutions VALUES ('hold-1', 3, 'void-1', 0)"))
    connection.execute(text("INSERT INTO expiry_policies VALUES ('PTS', 5, 2, 12, 0, 0, 30, 5)"))


@contextlib.contextmanager
def _seeded(tmp_path, backend: str):
    url, cleanup = new_database_url(backend, tmp_path, "locks")
    database = open_migrated(DatabaseOptions(url), MIGRATIONS, "alembic_version_ledger")
    try:
        database.write(_seed)
        yield database
    finally:
        database.dispose()
        cleanup()


def _hold(database, take, then=lambda connection: None) -> tuple[threading.Event, threading.Thread]:
    """Run `take` in a transaction on another thread and keep it open, its locks held, until the
    returned event is set; then run `then` and commit."""
    holds = threading.Event()
    release = threading.Event()

    def work(connection) -> None:
        take(connection)
        holds.set()
        assert release.wait(10)
        then(connection)

    thread = threading.Thread(target=database.write, args=(work,))
    thread.start()
    assert holds.wait(10)
    return release, thread


def _lock_account(connection) -> None:
    store.lock_and_read_batch(connection, [ACCOUNT], set(), set())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_read_under_the_locks_sees_the_batch_it_waited_for(tmp_path, backend):
    with _seeded(tmp_path, backend) as database:
        before = database.read(store.last_sequence)
        release, thread = _hold(database, _lock_account, _commit_a_batch)

        def waiter(connection) -> store.LockedBatch:
            return store.lock_and_read_batch(
                connection, [ACCOUNT, "no-such-account"], {"failed-1", "new-1"}, {"hold-1", "hold-2"}
            )

        threading.Timer(0.3, release.set).start()  # the holder commits while the waiter waits
        started = time.monotonic()
        locked = database.write(waiter)  # SQLite waits at BEGIN IMMEDIATE, PostgreSQL at the row locks
        waited = time.monotonic() - started
        thread.join(10)

        assert waited >= 0.25  # it did wait for the holder
        assert locked.balances[ACCOUNT].debits_posted == 5
        assert set(locked.accounts) == {ACCOUNT}
        assert locked.clock.last_sequence == before + 3
        assert locked.failed_ids == {"failed-1"}
        assert locked.committed_ids == set()
        assert locked.hold_states == {"hold-1": HoldState.VOIDED, "hold-2": HoldState.PENDING}
        assert locked.policies == {  # oldest first, the one committed while it waited included
            "PTS": [
                ExpiryPolicy("PTS", 5, PolicyKind.FIXED, 12, 0, 0, 30, 5),
                ExpiryPolicy("PTS", 9, PolicyKind.INACTIVITY, 24, 0, 0, 60, 0),
            ]
        }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_new_expiry_policy_waits_for_the_batch_holding_the_clock(tmp_path, backend):
    """A policy effective now takes its time in commit order: a batch that read the policies
    before the new one committed has finished by then, so none credits after its effective time
    under the policy before it."""
    with _seeded(tmp_path, backend) as database:
        ended = {}

        def end(connection) -> None:
            ended["at_us"] = store.clock_now_us(connection)

        # As a batch does: the clock row locked to its commit.
        release, thread = _hold(database, lambda connection: store.lock_clock(connection, shared=False), end)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        recorded, created = expiry_policies.set_policy(database, ExpiryPolicy("PTS", 0, PolicyKind.FIXED, 12), False)
        waited = time.monotonic() - started
        thread.join(10)
        assert created and waited >= 0.25
        assert recorded.effective_from_us >= ended["at_us"]


def test_a_balance_row_committed_while_the_batch_waited_for_its_locks_is_not_read_unlocked(tmp_path):
    """On PostgreSQL the read runs on a newer snapshot than the lock: an account created while
    the lock waited is visible to the read but unlocked, so the batch must not take it (to the
    lock it did not exist; the batch refuses it, as before)."""
    with _seeded(tmp_path, "postgres") as database:
        release, thread = _hold(database, _lock_account)

        def create_account_then_release() -> None:
            time.sleep(0.3)  # the waiter is now waiting for ACCOUNT's lock, its statement begun
            database.write(
                lambda c: (
                    c.execute(text("INSERT INTO accounts VALUES ('acct-new', 'PTS', 1, true, 'op', 'member', 0)")),
                    c.execute(text("INSERT INTO account_balances VALUES ('acct-new', 1, true, 0, 0, 0, 0)")),
                )
            )
            release.set()

        threading.Thread(target=create_account_then_release).start()
        locked = database.write(lambda c: store.lock_and_read_batch(c, [ACCOUNT, "acct-new"], set(), set()))
        thread.join(10)
        assert release.is_set()
        assert set(locked.accounts) == set(locked.balances) == {ACCOUNT}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_policy_effective_now_starts_after_the_last_commit_even_when_the_clock_went_back(tmp_path, backend):
    with _seeded(tmp_path, backend) as database:
        later_us = database.read(store.clock_now_us) + 3_600 * 1_000_000  # a batch committed an hour "ahead"
        database.write(lambda c: c.execute(text(f"UPDATE ledger_clock SET last_committed_at_us = {later_us}")))
        recorded, created = expiry_policies.set_policy(database, ExpiryPolicy("PTS", 0, PolicyKind.FIXED, 12), False)
        assert created and recorded.effective_from_us == later_us + 1
