"""Reversals priced at the original price (DOMAIN.md "Decisions on open questions").

An earn reversal (a return) or a redemption reversal is priced at the price its original transfer
was billed at: the agreement valid at the original's commit time, even when the reversal lands
in a later period under another agreement. So a price change between an earn and its return gives
nobody a gain. The tier bonus share of an earn reversal follows it (price and funder).

How: the ledger's activity read splits REVERSAL lines by the window of `original_time_bounds`
their originals committed in (grouped in SQL, GetActivitySummary.reversal_original_time_bounds).
The bounds are every agreement version's start and every closed period's start and end, so inside
one window each partner has one agreement and the window lies in at most one closed period: a
line is priced by the agreement valid at its window's start and names that closed period.
Late reversals (prior-period adjustments) look their originals up one by one.

Plain Python: no grpc, no sqlalchemy.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from services.settlement.model import Activity, AgreementBook

# The ledger's limit (services/ledger/limits.py REVERSAL_ORIGINAL_TIME_BOUNDS_MAX). Beyond it the
# newest bounds are kept: reversals of originals older than the oldest kept bound are priced at
# the agreement valid at their own time (decades of monthly periods fit).
ORIGINAL_TIME_BOUNDS_MAX = 1_000
_TIME_MIN_US = -(2**63)


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A closed period's window, [start_us, end_us)."""

    period_id: str
    start_us: int
    end_us: int


def original_time_bounds(book: AgreementBook, closed: Sequence[ClosedWindow], end_us: int) -> list[int]:
    """Ascending bounds before `end_us`: agreement starts and closed periods' starts and ends."""
    bounds = set(book.change_times(_TIME_MIN_US, end_us))
    for window in closed:
        bounds.update(b for b in (window.start_us, window.end_us) if b < end_us)
    return sorted(bounds)[-ORIGINAL_TIME_BOUNDS_MAX:]


def closed_period_at(closed: Sequence[ClosedWindow], time_us: int) -> str:
    """Id of the closed period whose window contains `time_us`; "" when none does."""
    starts = [window.start_us for window in closed]
    index = bisect.bisect_right(starts, time_us) - 1
    if index >= 0 and time_us < closed[index].end_us:
        return closed[index].period_id
    return ""


def with_original_periods(lines: Iterable[Activity], closed: Sequence[ClosedWindow]) -> list[Activity]:
    """Name the closed period of each reversal line's originals (`closed` ordered by start)."""
    return [
        replace(line, original_period_id=closed_period_at(closed, line.original_time_us))
        if line.original_time_us is not None
        else line
        for line in lines
    ]
