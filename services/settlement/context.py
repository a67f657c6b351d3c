"""What every settlement use case needs: the database, the ledger, the time zone, limits and a clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from services.common.db import Database
from services.common.metrics import Metrics
from services.settlement.documents import BillingDetails
from services.settlement.ledger_client import LedgerClient

T = TypeVar("T")


def system_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class SettlementContext:
    database: Database
    ledger: LedgerClient
    time_zone: ZoneInfo
    # A period may be closed once the ledger's clock is this far past its end: longer than any
    # ledger transaction can take (its statement timeout), so no commit inside the window is in flight.
    close_delay_seconds: int = 60
    # Audit reads balances and flows as of this long ago, so that no ledger transaction with an
    # earlier commit time can still be in flight between its reads.
    audit_lag_seconds: int = 2
    now_us: Callable[[], int] = field(default=system_clock_us)
    # The operator's own billing details for statement documents (settings COALITION_OPERATOR_*);
    # None when not configured (documents then say so).
    operator_billing: BillingDetails | None = None
    # The server's Prometheus series (services/common/metrics.py); None when metrics are off.
    metrics: Metrics | None = None

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Database work off the event loop, so gRPC calls keep flowing meanwhile."""
        return await asyncio.to_thread(self.database.read, work)

    async def write(self, work: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self.database.write, work)
