"""Numbers as a European finance team reads them: EUR 1.234,56 and 1.000.000 points."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.settlement.model import (
    BreakageOwner,
    LineKind,
    PeriodSettlement,
    Statement,
    StatementLine,
    TierBonusFunder,
)

LINE_LABELS = {
    LineKind.POINTS_ISSUED: "Points issued",
    LineKind.EARN_REVERSALS: "Earn reversals",
    LineKind.TIER_BONUS: "Tier bonus",
    LineKind.POINTS_REDEEMED: "Points redeemed",
    LineKind.REDEMPTION_REVERSALS: "Redemption reversals",
    LineKind.CONVERSIONS_OUT: "Conversions out (units delivered)",
    LineKind.CONVERSIONS_IN: "Conversions in (units delivered)",
    LineKind.BREAKAGE: "Breakage",
    LineKind.ADJUSTMENT: "Adjustment",
}
BREAKAGE_OWNER_LABELS = {
    BreakageOwner.ISSUING_PARTNER: "rebated to the partner at its issue price",
    BreakageOwner.OPERATOR: "kept by the operator",
}
TIER_BONUS_FUNDER_LABELS = {
    TierBonusFunder.PARTNER: "funded by the partner (included in points issued)",
    TierBonusFunder.OPERATOR: "funded by the operator (credited at the issue price)",
}


def grouped(number: int) -> str:
    """1234567 -> '1.234.567' (dot thousands separator)."""
    return f"{number:,}".replace(",", ".")


def eur(cents: int) -> str:
    """123456 -> 'EUR 1.234,56'; -5 -> 'EUR -0,05'."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"EUR {sign}{grouped(whole)},{fraction:02d}"


def points(quantity: int) -> str:
    return grouped(quantity)


def price(unit_price) -> str:
    """EUR 0,0085 (the agreed precision, comma decimal)."""
    return "EUR " + format(unit_price, "f").replace(".", ",")


def line_label(line: StatementLine) -> str:
    label = LINE_LABELS[line.kind]
    if line.counterparty_id:
        label += f" with {line.counterparty_id}"
    if line.kind is LineKind.BREAKAGE:
        owner = BREAKAGE_OWNER_LABELS.get(line.breakage_owner or BreakageOwner.OPERATOR, "")
        label += f" {owner}: expired {points(line.expired_quantity)} - reinstated {points(line.reinstated_quantity)}"
    if line.kind is LineKind.TIER_BONUS:
        funder = TIER_BONUS_FUNDER_LABELS.get(line.tier_bonus_funder or TierBonusFunder.PARTNER, "")
        label += (
            f" {funder}: issued {points(line.tier_bonus_issued_quantity)}"
            f" - reversed {points(line.tier_bonus_reversed_quantity)}"
        )
    if line.original_period_id:
        label += f" (priced at agreement {line.agreement_id}, period {line.original_period_id})"
    if line.kind is LineKind.ADJUSTMENT:
        label += f" {line.adjustment_id}: {line.adjustment_reason}"
    return label + (" (prior-period adjustment)" if line.prior_period_adjustment else "")


def net_sentence(statement: Statement) -> str:
    if statement.net_cents > 0:
        return f"{statement.partner_id} pays {eur(statement.net_cents)}"
    if statement.net_cents < 0:
        return f"the operator pays {statement.partner_id} {eur(-statement.net_cents)}"
    return f"nothing to settle with {statement.partner_id}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_datetime(micros: int) -> datetime:
    """Exact (no float) for every time in years 0001..9999."""
    return _EPOCH + timedelta(microseconds=micros)


def period_label(settlement: PeriodSettlement, zone: ZoneInfo) -> str:
    start, end = utc_datetime(settlement.start_us), utc_datetime(settlement.end_us)
    zone_name = zone.key
    try:
        start, end = start.astimezone(zone), end.astimezone(zone)
    except (OverflowError, ValueError):  # 9999-12-31 in a zone east of UTC is in year 10000
        zone_name = "UTC"
    state = "closed" if settlement.closed else "preview, not closed"
    return f"{settlement.period_id}: {start:%d.%m.%Y %H:%M} to {end:%d.%m.%Y %H:%M} ({zone_name}), {state}"


# Sign of each line kind in the points columns of the overview (issued and redeemed, net of reversals).
_ISSUED_SIGN = {LineKind.POINTS_ISSUED: 1, LineKind.EARN_REVERSALS: -1}
_REDEEMED_SIGN = {LineKind.POINTS_REDEEMED: 1, LineKind.REDEMPTION_REVERSALS: -1}


@dataclass(frozen=True, slots=True)
class PointsSummary:
    """A partner's points in one currency: units of two currencies are never added together."""

    partner_id: str
    currency_code: str
    issued: int  # net of earn reversals, in units of currency_code
    redeemed: int  # net of redemption reversals, in units of currency_code


def points_summaries(statement: Statement) -> list[PointsSummary]:
    """One summary per currency the partner issued or redeemed in, by currency code."""
    issued: dict[str, int] = defaultdict(int)
    redeemed: dict[str, int] = defaultdict(int)
    for line in statement.lines:
        if line.kind in _ISSUED_SIGN:
            issued[line.currency_code] += _ISSUED_SIGN[line.kind] * line.quantity
        elif line.kind in _REDEEMED_SIGN:
            redeemed[line.currency_code] += _REDEEMED_SIGN[line.kind] * line.quantity
    return [
        PointsSummary(statement.partner_id, code, issued.get(code, 0), redeemed.get(code, 0))
        for code in sorted(issued.keys() | redeemed.keys())
    ]


def points_by_currency(statements: Iterable[Statement]) -> dict[str, list[PointsSummary]]:
    """What each chart draws: per currency (sorted), the partners that issued or redeemed in it."""
    charts: dict[str, list[PointsSummary]] = defaultdict(list)
    for statement in statements:
        for summary in points_summaries(statement):
            charts[summary.currency_code].append(summary)
    return {code: charts[code] for code in sorted(charts)}
