"""CSV: one row per statement line, machine-readable (amounts in cents and as dot-decimal EUR)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from services.settlement.model import PeriodSettlement

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
)


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat()


def render_csv(settlement: PeriodSettlement, partner_id: str = "") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for statement in settlement.statements:
        if partner_id and statement.partner_id != partner_id:
            continue
        for line in statement.lines:
            sign = "-" if line.amount_cents < 0 else ""
            whole, fraction = divmod(abs(line.amount_cents), 100)
            writer.writerow(
                (
                    settlement.period_id,
                    _iso(settlement.start_us),
                    _iso(settlement.end_us),
                    statement.partner_id,
                    line.kind.value,
                    line.currency_code,
                    line.counterparty_currency_code,
                    line.counterparty_id,
                    "true" if line.prior_period_adjustment else "false",
                    line.quantity,
                    format(line.unit_price, "f"),
                    line.amount_cents,
                    f"{sign}{whole}.{fraction:02d}",
                    line.agreement_id,
                )
            )
    return buffer.getvalue()
