"""CSV: one row per statement line, machine-readable (amounts in cents and as dot-decimal EUR)."""

from __future__ import annotations

import csv
import io

from services.settlement.model import PeriodSettlement
from services.settlement.reports.formatting import utc_datetime

COLUMNS = (
    "period_id",
    "period_start_utc",
    "period_end_utc",
    "partner_id",
    "line_kind",
    "currency_code",
    "counterparty_currency_code",
    "counterparty_id",
    "prior_period_adjustment",
    "quantity",
    "unit_price_eur",
    "amount_cents",
    "amount_eur",
    "agreement_id",
    # BREAKAGE lines (quantity = expired - reinstated); 0, 0 and empty on other lines.
    "expired_quantity",
    "reinstated_quantity",
    "breakage_owner",
    # TIER_BONUS lines (quantity = bonus issued - bonus reversed); 0, 0 and empty on other lines.
    "tier_bonus_issued_quantity",
    "tier_bonus_reversed_quantity",
    "tier_bonus_funder",
)


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such text
# cells get a leading single quote. Numbers and the numeric columns are written as they are.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _iso(micros: int) -> str:
    return utc_datetime(micros).isoformat()


def render_csv(settlement: PeriodSettlement, partner_id: str = "") -> str:
    buffer = io.StringIO()
    # RFC 4180 line ends: with "\r\n" as terminator the writer also quotes a cell holding a lone CR.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for statement in settlement.statements:
        if partner_id and statement.partner_id != partner_id:
            continue
        for line in statement.lines:
            sign = "-" if line.amount_cents < 0 else ""
            whole, fraction = divmod(abs(line.amount_cents), 100)
            writer.writerow(
                (
                    _text(settlement.period_id),
                    _iso(settlement.start_us),
                    _iso(settlement.end_us),
                    _text(statement.partner_id),
                    line.kind.value,
                    _text(line.currency_code),
                    _text(line.counterparty_currency_code),
                    _text(line.counterparty_id),
                    "true" if line.prior_period_adjustment else "false",
                    line.quantity,
                    format(line.unit_price, "f"),
                    line.amount_cents,
                    f"{sign}{whole}.{fraction:02d}",
                    _text(line.agreement_id),
                    line.expired_quantity,
                    line.reinstated_quantity,
                    line.breakage_owner.value if line.breakage_owner is not None else "",
                    line.tier_bonus_issued_quantity,
                    line.tier_bonus_reversed_quantity,
                    line.tier_bonus_funder.value if line.tier_bonus_funder is not None else "",
                )
            )
    return buffer.getvalue()
