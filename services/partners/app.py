"""What every use case needs: the database, the ledger client, the clock and the secrets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from sqlalchemy import Connection

from services.common.auth import AdminKey
from services.common.coalescer import Coalescer
from services.common.db import Database
from services.common.group_commit import GroupCommit
from services.common.ledger_client import LedgerClient
from services.partners.facts import Facts

T = TypeVar("T")
_log = structlog.get_logger("partners")
Clock = Callable[[], int]  # microseconds since the epoch, UTC


def system_clock() -> int:
    return time.time_ns() // 1000


@dataclass(slots=True)
class App:
    database: Database
    ledger: LedgerClient
    admin_key: AdminKey
    alias_secret: bytes
    clock: Clock = system_clock
    # Wallets known to exist in the ledger and in our notes; wallets are never deleted.
    known_wallets: set[str] = field(default_factory=set)
    facts: Facts = field(default_factory=Facts)
    # Merged write paths by kind (services/common/coalescer.py), made on first use.
    mergers: dict[str, object] = field(default_factory=dict)
    # Work that no caller waits for (see `later`); kept so it is not collected mid-flight.
    background: set[asyncio.Task] = field(default_factory=set)

    async def write(self, work: Callable[[Connection], T], *, retry_unique_violation: bool = False) -> T:
        """One unit of work on the writer, committed before this returns, off the event loop (the
        driver blocks). Concurrent units share one transaction, each in its own savepoint."""
        group = self.mergers.get("write")
        if group is None:
            group = self.mergers["write"] = GroupCommit(self.database)
        return await group.write(work, retry_unique_violation=retry_unique_violation)

    def merger(self, kind: str, handle: Callable, batch_items_max: int, queued_items_max: int) -> Coalescer:
        """The merged path of one kind of call (services/common/coalescer.py), made on first use."""
        merger = self.mergers.get(kind)
        if merger is None:
            merger = self.mergers[kind] = Coalescer(kind, handle, batch_items_max, queued_items_max)
        return merger

    def later(self, work: Awaitable[object], what: str) -> None:
        """Run work after the caller is answered. Only for work whose loss the recovery pass
        repairs (a crash between the answer and this work leaves nothing wrong, only late)."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(lambda done: self._background_done(done, what))

    def _background_done(self, task: asyncio.Task, what: str) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("background_work_failed", work=what, error=repr(task.exception()))

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.database.read, work)
