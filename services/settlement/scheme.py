"""The period scheme and what a preview warns about. Pure: no grpc, no sqlalchemy.

Periods are calendar months (id YYYY-MM) or custom windows (any id with a start and an end);
the two mix freely as long as each closed period starts where the previous one ended, so the
closed periods always cover one contiguous stretch [first start, last end). From that follow:
- what a preview of any window shows: its part after the last closed period (what the next
  close can still bill), with a warning naming the closed period it overlaps;
- which window a refused close should have asked for (`next_window`): the rest of the window
  after the last closed period, or the gap before it, as a calendar month id when it is one;
- that points activity before the first period is never billed: a preview says so per partner
  and currency (`unbilled_warnings`). To bill it, close a first custom period that starts at or
  before the ledger's first transfer (docs/FINANCE.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from services.settlement.model import (
    AgreementBook,
    LineKind,
    Movement,
    PricedMovement,
    SettlementRuleError,
    price_movements,
)

PERIOD_ID_LENGTH_MAX = 64
REST_SUFFIX = "-rest"
GAP_PREFIX = "gap-"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WARNINGS_MAX = 200  # per preview: a ledger with thousands of unpriced partners still answers in one message


class WarningKind(StrEnum):
    UNBILLED_BEFORE_FIRST_PERIOD = "UNBILLED_BEFORE_FIRST_PERIOD"
    OVERLAPS_CLOSED_PERIOD = "OVERLAPS_CLOSED_PERIOD"
    PRICE_MISSING = "PRICE_MISSING"


@dataclass(frozen=True, slots=True)
class PeriodWarning:
    kind: WarningKind
    message: str
    partner_id: str = ""
    currency_code: str = ""
    period_id: str = ""
    start_us: int = 0
    end_us: int = 0


@dataclass(frozen=True, slots=True)
class ClosedSpan:
    """What the closed periods cover: [first_start_us, last_end_us), contiguous by construction."""

    first_period_id: str
    first_start_us: int
    last_period_id: str
    last_end_us: int


@dataclass(frozen=True, slots=True)
class Window:
    period_id: str
    start_us: int
    end_us: int


def local_time(micros: int, zone: ZoneInfo) -> datetime:
    """A moment in `zone`, computed in UTC (wall-clock arithmetic in the zone would slip at DST)."""
    return (EPOCH + timedelta(microseconds=micros)).astimezone(zone)


def iso(micros: int, zone: ZoneInfo) -> str:
    """The moment in `zone`; in UTC where the zone's local time leaves years 0001..9999 (the
    ends of the Timestamp range a caller may send: 9999-12-31 east of UTC is in year 10000)."""
    moment = EPOCH + timedelta(microseconds=micros)
    try:
        return moment.astimezone(zone).isoformat()
    except (OverflowError, ValueError):
        return moment.isoformat()


def month_id(start_us: int, end_us: int, zone: ZoneInfo) -> str | None:
    """YYYY-MM when [start, end) is exactly that calendar month in `zone`, else None."""
    try:
        start = local_time(start_us, zone)
        if (start.day, start.hour, start.minute, start.second, start.microsecond) != (1, 0, 0, 0, 0):
            return None
        following = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=zone)
    except (OverflowError, ValueError):  # a window at the ends of years 0001..9999: no month of its own
        return None
    if int(following.timestamp()) * 1_000_000 != end_us:
        return None
    return f"{start.year:04d}-{start.month:02d}"


def open_part(span: ClosedSpan | None, start_us: int, end_us: int) -> tuple[int, int] | None:
    """The part of [start, end) a preview shows: after the last closed period; None if all of it is settled."""
    if span is None or end_us <= span.first_start_us or start_us >= span.last_end_us:
        return start_us, end_us
    if end_us <= span.last_end_us:
        return None
    return span.last_end_us, end_us


def overlap_warning(span: ClosedSpan, period_id: str, start_us: int, end_us: int, zone: ZoneInfo) -> PeriodWarning:
    shown = open_part(span, start_us, end_us)
    if shown is None:
        what = "all of it is settled: nothing is shown"
    else:
        what = f"only what is not yet settled is shown, from {iso(shown[0], zone)} to {iso(end_us, zone)}"
        hint = next_window(span, period_id, start_us, end_us, zone)
        if hint is not None:
            what += f"; close it as period {hint.period_id}" + _times(hint, zone)
    return PeriodWarning(
        WarningKind.OVERLAPS_CLOSED_PERIOD,
        f"{period_id} overlaps closed period {span.last_period_id} (closed periods cover"
        f" {iso(span.first_start_us, zone)} to {iso(span.last_end_us, zone)}); {what}",
        period_id=span.last_period_id,
        start_us=shown[0] if shown else span.last_end_us,
        end_us=end_us,
    )


def _times(window: Window, zone: ZoneInfo) -> str:
    if month_id(window.start_us, window.end_us, zone) == window.period_id:
        return ""
    return f" (start {iso(window.start_us, zone)}, end {iso(window.end_us, zone)})"


def next_window(span: ClosedSpan, period_id: str, start_us: int, end_us: int, zone: ZoneInfo) -> Window | None:
    """The window to close instead of a non-contiguous [start, end); None when all of it is settled.

    Overlapping the closed periods: the rest after the last one (`{id}-rest`). After a gap: the
    gap itself (`gap-{id}`), to close first. Either is named YYYY-MM when it is that calendar month.
    """
    if start_us < span.last_end_us:
        if end_us <= span.last_end_us:
            return None
        window_end, fallback = end_us, period_id[: PERIOD_ID_LENGTH_MAX - len(REST_SUFFIX)] + REST_SUFFIX
    else:
        window_end, fallback = start_us, GAP_PREFIX + period_id[: PERIOD_ID_LENGTH_MAX - len(GAP_PREFIX)]
    window_start = span.last_end_us
    return Window(month_id(window_start, window_end, zone) or fallback, window_start, window_end)


def price_missing_warnings(missing: Iterable[tuple[str, str]]) -> list[PeriodWarning]:
    """One warning per (partner, currency) whose activity a preview left out for want of a price."""
    return [
        PeriodWarning(
            WarningKind.PRICE_MISSING,
            f"partner {partner_id} has {currency_code} activity but no price agreement valid at the time"
            f" prices it: that activity is left out of {partner_id}'s preview (its statement is"
            " incomplete) and the period cannot be closed until a price is recorded (set-agreement)",
            partner_id=partner_id,
            currency_code=currency_code,
        )
        for partner_id, currency_code in sorted(set(missing))[:WARNINGS_MAX]
    ]


_UNBILLED_WORDS = {
    LineKind.POINTS_ISSUED: "issued",
    LineKind.EARN_REVERSALS: "earn reversals",
    LineKind.POINTS_REDEEMED: "redeemed",
    LineKind.REDEMPTION_REVERSALS: "redemption reversals",
    LineKind.CONVERSIONS_OUT: "converted out (units delivered)",
    LineKind.CONVERSIONS_IN: "converted in (units delivered)",
}


def unbilled_warnings(
    movements: Sequence[Movement], first_start_us: int, first_period_id: str, zone: ZoneInfo
) -> list[PeriodWarning]:
    """Per partner and currency: points activity before the first period, which no period bills."""
    sums: dict[tuple[str, str], dict[LineKind, int]] = defaultdict(lambda: defaultdict(int))
    for movement in movements:
        if movement.kind in _UNBILLED_WORDS and movement.quantity:
            sums[(movement.partner_id, movement.currency_code)][movement.kind] += movement.quantity
    where = f"closed period {first_period_id}" if first_period_id else "this period (no period is closed yet)"
    remedy = (
        "no later period bills it; settle it with an adjustment"
        if first_period_id
        else "to bill it, close a first period whose start is at or before the ledger's first transfer"
        " (docs/FINANCE.md, 'The first period')"
    )
    warnings = []
    for (partner_id, currency_code), kinds in sorted(sums.items())[:WARNINGS_MAX]:
        figures = ", ".join(f"{quantity:,} {_UNBILLED_WORDS[kind]}" for kind, quantity in kinds.items())
        warnings.append(
            PeriodWarning(
                WarningKind.UNBILLED_BEFORE_FIRST_PERIOD,
                f"partner {partner_id}: {currency_code} activity before {iso(first_start_us, zone)}, the start"
                f" of {where}, is not billed ({figures}); {remedy}",
                partner_id=partner_id,
                currency_code=currency_code,
                period_id=first_period_id,
                start_us=first_start_us,
            )
        )
    return warnings


def price_or_leave_out(
    movements: Iterable[Movement],
    book: AgreementBook,
    time_us: int,
    currency_owners: Mapping[str, str],
    prior_period_adjustment: bool,
    missing: list[tuple[str, str]] | None,
) -> list[PricedMovement]:
    """model.price_movements, except that with a `missing` list (a preview) a movement without a
    price is left out and (partner, currency) noted there instead of refusing the whole period.

    Both sides of a conversion are looked up by the same agreements, so they are priced or left
    out together and the netting check still holds."""
    movements = list(movements)
    if missing is None:
        return price_movements(movements, book, time_us, currency_owners, prior_period_adjustment)
    priced: list[PricedMovement] = []
    for movement in movements:
        try:
            priced.extend(price_movements([movement], book, time_us, currency_owners, prior_period_adjustment))
        except SettlementRuleError as error:
            if error.reason != "PRICE_MISSING":
                raise
            missing.append((movement.partner_id, movement.currency_code))
    return priced
