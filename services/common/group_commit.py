"""Group commit: concurrent write transactions of one process share one database transaction.

A till's call writes a few rows; a transaction per call pays a commit (and on SQLite the one
write lock) per call. Whatever writes arrive while the previous group is committing are run
together in one transaction, and one call's refusal or bad data never costs its neighbours
their writes. Each caller is answered only after the group has committed.
A group is first run straight; only if a unit refuses is it rolled back and run again with a
savepoint per unit (units are whole transactions' work, so running one twice is as safe as the
retry of a transaction). A unique-key conflict inside the group re-runs that write alone with
its own retry policy; a deadlock or serialization failure re-runs the whole group
(services.common.db.run_transaction); a lost database fails the group alike, as it would each
transaction.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from services.common.coalescer import Coalescer, outcome
from services.common.db import Database

T = TypeVar("T")

# Writes in one group at most, and waiting at most (then UNAVAILABLE: retry with the same id).
GROUP_WRITES_MAX = 128
QUEUED_WRITES_MAX = 10_000
# Groups committing at once. One: the writes arriving while a group commits wait for it and
# form the next, larger group, instead of starting a second small transaction at once. Measured
# with bench/profile_pos.py --pairs 2 (2 partners + 2 ledger, 2 cores), A+C pairs in 3
# interleaved pairs of runs: 497, 518, 541 pairs/s with one against 460, 434, 475 with two, and
# partners CPU per pair 1.61-1.71 against 1.83-1.97 ms. On 1 + 1 an earlier stop saw no
# difference either way (524-554 against 520-570).
GROUPS_IN_FLIGHT_MAX = 1


@dataclass(frozen=True, slots=True)
class _Write:
    work: Callable[[Connection], object]
    retry_unique_violation: bool


class _Alone:
    """Marks a write that met a unique-key conflict in the group: it is run again on its own."""


_ALONE = _Alone()


class GroupCommit:
    def __init__(self, database: Database, tracer=None) -> None:
        self._database = database
        self._writes = Coalescer(
            "write transaction",
            self._commit,
            GROUP_WRITES_MAX,
            QUEUED_WRITES_MAX,
            GROUPS_IN_FLIGHT_MAX,
            tracer=tracer,
        )

    @property
    def group_sizes(self) -> Counter[int]:
        """How many transactions committed each number of units of work."""
        return self._writes.batch_sizes

    async def write(self, work: Callable[[Connection], T], *, retry_unique_violation: bool = False) -> T:
        return await self._writes.submit(_Write(work, retry_unique_violation))  # type: ignore[return-value]

    async def _commit(self, writes: list[_Write]) -> list[object]:
        if len(writes) == 1:
            return [await self._alone(writes[0])]
        try:
            # Mostly every unit succeeds: run them straight, without a savepoint's two round trips each.
            return await asyncio.to_thread(
                self._database.write, lambda connection: [_straight(connection, write.work) for write in writes]
            )
        except _Refused:
            pass  # one unit refused or conflicted: the group rolled back; now each in its own savepoint
        outcomes = await asyncio.to_thread(
            self._database.write, lambda connection: [_in_savepoint(connection, write.work) for write in writes]
        )
        return [
            await self._alone(write) if outcome is _ALONE else outcome
            for write, outcome in zip(writes, outcomes, strict=True)
        ]

    async def _alone(self, write: _Write) -> object:
        # Its error is this write's answer, not its neighbours'.
        return await outcome(
            asyncio.to_thread(self._database.write, write.work, retry_unique_violation=write.retry_unique_violation)
        )


class _Refused(Exception):
    """A unit of a group run straight failed on its own: the group is rolled back and run again."""


def _straight(connection: Connection, work: Callable[[Connection], object]) -> object:
    try:
        return work(connection)
    except (sa_exc.OperationalError, sa_exc.InterfaceError):
        raise  # the database itself, or a deadlock: the whole group is retried or fails
    except Exception as error:
        raise _Refused() from error


def _in_savepoint(connection: Connection, work: Callable[[Connection], object]) -> object:
    try:
        with connection.begin_nested():
            return work(connection)
    except (sa_exc.OperationalError, sa_exc.InterfaceError):
        raise  # the database itself, or a deadlock: the whole group is retried or fails
    except sa_exc.IntegrityError:
        return _ALONE
    except Exception as error:
        return error
