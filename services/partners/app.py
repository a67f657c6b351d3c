"""What every use case needs: the database, the ledger client, the clock and the secrets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from services.common.auth import AdminKey
from services.common.coalescer import Coalescer
from services.common.db import Database
from services.common.group_commit import GroupCommit
from services.common.ledger_client import LedgerClient
from services.common.metrics import Metrics
from services.partners.deferred_marks import DeferredMarks
from services.partners.facts import Facts
from services.partners.rate_limits import RateLimits
from services.partners.store import earns as earn_store

T = TypeVar("T")
Clock = Callable[[], int]  # microseconds since the epoch, UTC
DEFAULT_TIME_ZONE = "Europe/Amsterdam"


def system_clock() -> int:
    return time.time_ns() // 1000


# One batch of a kind (earns, holds, resolutions, redemption reads) in flight at a time: the
# calls that arrive while it runs make the next. With two, the same arrivals split into more,
# smaller batches, each paying its transactions and ledger calls. Measured with
# bench/profile_pos.py (1 partners + 1 ledger, 2 cores, interleaved runs): open-loop Earn at
# 530/s took 1.00-1.06 ms of partners and 0.40 ms of ledger CPU per earn with one, 1.15-1.26 and
# 0.52 with two, and its p50/p99 went from 23-29/49-94 ms to 18-23/33-53 ms;
# AuthorizeRedemption+CaptureRedemption at 64 in flight went from 487-527 to 500-550 pairs/s
# (partners 1.29-1.40 -> 1.16-1.29 ms per pair); closed-loop Earn did not change.
MERGED_BATCHES_IN_FLIGHT_MAX = 1


@dataclass(slots=True)
class App:
    database: Database
    ledger: LedgerClient
    admin_key: AdminKey
    alias_secret: bytes
    clock: Clock = system_clock
    # The coalition's time zone: calendar months and years of tier windows (COALITION_TIME_ZONE).
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIME_ZONE))
    # Wallets known to exist in the ledger and in our notes; wallets are never deleted.
    known_wallets: set[str] = field(default_factory=set)
    facts: Facts = field(default_factory=Facts)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # API keys being read from the database, by hash: concurrent calls with a key whose cached
    # entry just went stale wait for one read instead of each reading it (services/partners/access.py).
    key_loads: dict[str, tuple[float, asyncio.Future]] = field(default_factory=dict)
    # Earns the ledger took, marked posted by the next earn batch's transaction (deferred_marks.py).
    posted_earns: DeferredMarks = field(init=False)
    # Earn batches still to read for earlier earns before inserting, after one met a retry
    # (services/partners/earning.py, READ_FIRST_BATCHES_AFTER_CONFLICT).
    earn_batches_reading_first: int = 0
    # Merged write paths by kind (services/common/coalescer.py), made on first use.
    mergers: dict[str, object] = field(default_factory=dict)
    # The server's Prometheus series (services/common/metrics.py); None when metrics are off.
    metrics: Metrics | None = None
    # Tracing on: the tracer of merged batches (services/common/tracing.py); None when off.
    tracer: object | None = None

    def __post_init__(self) -> None:
        self.posted_earns = DeferredMarks(self._mark_earns_posted)

    async def _mark_earns_posted(self, earn_ids: list[str]) -> None:
        await self.write(lambda connection: earn_store.mark_earns_posted(connection, earn_ids))

    async def write(self, work: Callable[[Connection], T], *, retry_unique_violation: bool = False) -> T:
        """One unit of work on the writer, committed before this returns, off the event loop (the
        driver blocks). Concurrent units share one transaction, each in its own savepoint."""
        group = self.mergers.get("write")
        if group is None:
            group = self.mergers["write"] = GroupCommit(self.database, self.tracer)
        return await group.write(work, retry_unique_violation=retry_unique_violation)

    def merger(self, kind: str, handle: Callable, batch_items_max: int, queued_items_max: int) -> Coalescer:
        """The merged path of one kind of call (services/common/coalescer.py), made on first use."""
        merger = self.mergers.get(kind)
        if merger is None:
            merger = self.mergers[kind] = Coalescer(
                kind, handle, batch_items_max, queued_items_max, MERGED_BATCHES_IN_FLIGHT_MAX, tracer=self.tracer
            )
        return merger

    async def read(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.database.read, work)

    async def read_statement(self, work: Callable[[Connection], T]) -> T:
        """A read of exactly one statement, outside a transaction (`Database.read_statement`)."""
        return await asyncio.to_thread(self.database.read_statement, work)
