"""Statements for partners as CSV: each partner's lines, then its totals (what it pays, is paid, net)."""

from __future__ import annotations

import csv
import io

from services.settlement.model import PeriodSettlement
from services.settlement.reports.formatting import utc_datetime
from services.settlement.reports.journal import decimal_eur, spreadsheet_text

COLUMNS = (
    "period_id",
    "period_start_utc",
    "period_end_utc",
    "partner_id",
    "row",  # a line kind (POINTS_ISSUED, ...) or TOTAL_PARTNER_PAYS, TOTAL_PARTNER_IS_PAID, TOTAL_NET
    "currency_code",
    "counterparty_id",
    "prior_period_adjustment",
    "quantity",
    "unit_price_eur",
    "amount_eur",  # positive: the partner pays; negative: the partner is paid
    "agreement_id",
    "state",  # CLOSED, or PREVIEW for figures of a period not closed yet
)


def render_statement_csv(settlement: PeriodSettlement, partner_id: str = "") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    period = (
        spreadsheet_text(settlement.period_id),
        utc_datetime(settlement.start_us).isoformat(),
        utc_datetime(settlement.end_us).isoformat(),
    )
    state = "CLOSED" if settlement.closed else "PREVIEW"
    for statement in settlement.statements:
        if partner_id and statement.partner_id != partner_id:
            continue
        partner = spreadsheet_text(statement.partner_id)
        for line in statement.lines:
            writer.writerow(
                (
                    *period,
                    partner,
                    line.kind.value,
                    spreadsheet_text(line.currency_code),
                    spreadsheet_text(line.counterparty_id),
                    "true" if line.prior_period_adjustment else "false",
                    line.quantity,
                    format(line.unit_price, "f"),
                    decimal_eur(line.amount_cents),
                    spreadsheet_text(line.agreement_id),
                    state,
                )
            )
        for label, cents in (
            ("TOTAL_PARTNER_PAYS", statement.partner_pays_cents),
            ("TOTAL_PARTNER_IS_PAID", -statement.partner_is_paid_cents),
            ("TOTAL_NET", statement.net_cents),
        ):
            writer.writerow((*period, partner, label, "EUR", "", "", "", "", decimal_eur(cents), "", state))
    return buffer.getvalue()
