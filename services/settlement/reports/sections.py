"""What a report says, once, for both HTML and PDF: a title, a DRAFT flag and sections of
paragraphs, tables and charts. html_report and pdf_report only draw these, so the two formats
show the same sections, figures and sentences by construction.

Per-currency rule: a table or chart never adds or shares an axis between two currencies: points
are in rows (or charts) per currency, money is EUR only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from services.settlement.documents import (
    BillingDetails,
    StatementDocument,
    payment_sentence,
    sign_convention_sentence,
)
from services.settlement.model import PeriodSettlement, Statement
from services.settlement.reports.formatting import (
    LINE_LABELS,
    PointsSummary,
    eur,
    line_label,
    net_sentence,
    period_label,
    points,
    points_by_currency,
    points_summaries,
    price,
)

ROUNDING_NOTE = (
    "Each line is quantity x unit price, rounded half-even to cents once; totals are sums of lines."
    " The tax is the net x the agreement's rate, rounded half-even to cents once."
)
CHART_PARTNERS_MAX = 12
DRAFT_NOTE = "DRAFT: a preview of an open period, not a closed statement. It has no number and is not payable."


@dataclass(frozen=True, slots=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric_columns: frozenset[int] = frozenset()  # right-aligned column indexes
    total_rows: int = 0  # the last N rows are totals (bold)
    equal_columns: bool = False  # side by side blocks (parties): each column gets the same width


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    emphasis: str = ""  # "", "ok", "bad" (a check's outcome), "note"


@dataclass(frozen=True, slots=True)
class PointsChart:
    """Issued and redeemed per partner, in one currency's units only."""

    currency_code: str
    rows: list[PointsSummary]


@dataclass(frozen=True, slots=True)
class NetChart:
    """Net per partner in EUR: positive the partner pays, negative it is paid."""

    rows: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2  # 2: a section, 3: a part of a partner's statement


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    subtitle: str
    draft: bool
    sections: list[Section]


# ---------------------------------------------------------------- a partner's statement


def _party(details: BillingDetails | None, missing: str) -> list[str]:
    if details is None:
        return [missing]
    lines = [details.legal_name, *details.address.split("\n"), f"VAT id {details.vat_id}", f"IBAN {details.iban}"]
    if details.billing_email:
        lines.append(details.billing_email)
    return lines


def _parties(document: StatementDocument | None) -> Table:
    operator = _party(document.operator_billing if document else None, "(operator details not configured)")
    partner = _party(document.partner_billing if document else None, "(no billing details recorded)")
    height = max(len(operator), len(partner))
    operator += [""] * (height - len(operator))
    partner += [""] * (height - len(partner))
    rows = [[a, b] for a, b in zip(operator, partner, strict=True)]
    return Table(["from (operator)", "to (partner)"], rows, equal_columns=True)


def _details(statement: Statement, document: StatementDocument | None, draft: bool) -> Table:
    agreements = sorted({line.agreement_id for line in statement.lines if line.agreement_id})
    rows = [
        ["statement number", document.statement_number if document and document.statement_number else "DRAFT (none)"],
    ]
    if document is not None:
        rows += [
            ["issue date" + (" (of this preview)" if draft else ""), document.issue_date.isoformat()],
            ["payment terms", f"{document.payment_terms_days} days"],
            ["due date", document.due_date.isoformat()],
            ["terms and tax from agreement", document.agreement_id or "(none)"],
        ]
    rows.append(["agreements priced on the lines", ", ".join(agreements) or "(none)"])
    if statement.settlement_transfer_id:
        rows.append(["posted on the ledger as transfer", statement.settlement_transfer_id])
    return Table(["", ""], rows)


def _lines(statement: Statement) -> Table:
    rows = [
        [
            line_label(line),
            line.currency_code,
            points(line.quantity),
            price(line.unit_price),
            eur(line.amount_cents),
            line.agreement_id,
        ]
        for line in statement.lines
    ]
    return Table(["line", "currency", "quantity", "unit price", "amount", "agreement"], rows, frozenset({2, 3, 4}))


def _totals(statement: Statement, document: StatementDocument | None) -> Table:
    rows = [
        ["partner pays", eur(statement.partner_pays_cents)],
        ["partner is paid", eur(-statement.partner_is_paid_cents)],
        [f"net ({net_sentence(statement)})", eur(statement.net_cents)],
    ]
    if document is not None:
        note = f"; {document.tax_note}" if document.tax_note else ""
        rows += [
            [f"tax at {document.tax_rate_percent} %{note}", eur(document.tax_cents)],
            [f"gross ({payment_sentence(document)})", eur(document.gross_cents)],
        ]
    return Table(["EUR totals", "amount"], rows, frozenset({1}), total_rows=1)


def _stores(document: StatementDocument | None) -> Table | Text:
    if document is None or not document.store_lines:
        return Text("No store activity in the period window.", "note")
    rows = [
        [
            line.store_id or "(no store)",
            LINE_LABELS[line.kind],
            line.currency_code,
            points(line.transaction_count),
            points(line.quantity),
        ]
        for line in document.store_lines
    ]
    return Table(["store", "line", "currency", "transactions", "points"], rows, frozenset({3, 4}))


def statement_sections(settlement: PeriodSettlement, statement: Statement, heading: str) -> list[Section]:
    document = settlement.document(statement.partner_id)
    draft = not settlement.closed
    return [
        Section(heading, [_details(statement, document, draft)]),
        Section("Parties", [_parties(document)], level=3),
        Section("Lines", [_lines(statement)], level=3),
        Section("Totals (EUR)", [_totals(statement, document), Text(sign_convention_sentence(), "note")], level=3),
        Section(
            "Lines per store",
            [
                _stores(document),
                Text("Counts and points of the period window; amounts are priced on the totals above.", "note"),
            ],
            level=3,
        ),
    ]


# ---------------------------------------------------------------- the overview


def overview_rows(settlement: PeriodSettlement) -> list[list[str]]:
    """One row per partner and currency (points in that currency); EUR on the partner's first row."""
    data = [
        [
            "partner",
            "currency",
            "points issued",
            "points redeemed",
            "net (EUR)",
            "tax (EUR)",
            "gross (EUR)",
            "statement",
        ]
    ]
    for statement in settlement.statements:
        document = settlement.document(statement.partner_id)
        money = [
            eur(statement.net_cents),
            eur(document.tax_cents) if document else "",
            eur(document.gross_cents) if document else "",
            (document.statement_number or "DRAFT") if document else "",
        ]
        summaries = points_summaries(statement)
        if not summaries:
            data.append([statement.partner_id, "", "", "", *money])
        for index, summary in enumerate(summaries):
            data.append(
                [
                    statement.partner_id,
                    summary.currency_code,
                    points(summary.issued),
                    points(summary.redeemed),
                    *(money if index == 0 else ["", "", "", ""]),
                ]
            )
    data.append(["operator net cash (sum of nets)", "", "", "", eur(settlement.netting.operator_net_cents), "", "", ""])
    return data


def _roll_forward(settlement: PeriodSettlement) -> Table:
    rows = [
        [
            rf.currency_code,
            points(rf.opening_outstanding),
            points(rf.issued - rf.earn_reversed),
            points(rf.redeemed - rf.redemption_reversed),
            points(rf.expired),
            points(rf.reinstated),
            points(rf.converted_in - rf.converted_out),
            points(rf.other_adjustments),
            points(rf.closing_outstanding),
        ]
        for rf in settlement.roll_forwards
    ]
    header = [
        "currency",
        "opening",
        "issued (net)",
        "redeemed (net)",
        "expired",
        "reinstated",
        "converted (in - out)",
        "other",
        "closing",
    ]
    return Table(header, rows, frozenset(range(1, 9)))


def _netting(settlement: PeriodSettlement) -> Text:
    netting = settlement.netting
    return Text(
        f"Netting check: sum of partner nets {eur(netting.operator_net_cents)}; operator side computed from its"
        f" own lines {eur(netting.operator_net_from_lines_cents)}:"
        f" {'they agree' if netting.balanced else 'THEY DO NOT AGREE'}.",
        "ok" if netting.balanced else "bad",
    )


def _parts(rows: list) -> list[list]:
    return [rows[index : index + CHART_PARTNERS_MAX] for index in range(0, len(rows), CHART_PARTNERS_MAX)] or [[]]


def build_report(settlement: PeriodSettlement, partner_id: str, zone: ZoneInfo) -> Report:
    draft = not settlement.closed
    label = period_label(settlement, zone)
    notes = Section("Notes", [Text(ROUNDING_NOTE)])  # the sign convention is with each statement's totals
    if partner_id:
        statement = settlement.statement(partner_id) or Statement(partner_id, ())
        document = settlement.document(partner_id)
        number = document.statement_number if document and document.statement_number else "DRAFT"
        sections = statement_sections(settlement, statement, "Statement")
        return Report(f"Settlement statement {number}: {partner_id}", label, draft, [*sections, notes])
    overview = Section(
        "Partners",
        [
            Table(overview_rows(settlement)[0], overview_rows(settlement)[1:], frozenset({2, 3, 4, 5, 6}), 1),
            Text("Points are per currency, in that currency's units; money is EUR. Nothing adds two currencies."),
            _netting(settlement),
        ],
    )
    # A chart shows at most CHART_PARTNERS_MAX partners (so it fits a page and stays readable);
    # more partners: more charts, each still in one currency.
    charts = [
        Section(f"{code} issued and redeemed per partner", [PointsChart(code, part) for part in _parts(rows)])
        for code, rows in points_by_currency(settlement.statements).items()
    ]
    nets = [(s.partner_id, s.net_cents) for s in settlement.statements]
    net_chart = Section(
        "Net positions in EUR (right: partner pays; left: partner is paid)", [NetChart(part) for part in _parts(nets)]
    )
    roll = Section("Points liability roll-forward (per currency, in its units)", [_roll_forward(settlement)])
    statements = [
        section
        for statement in settlement.statements
        for section in statement_sections(settlement, statement, f"Statement: {statement.partner_id}")
    ]
    return Report("Settlement overview", label, draft, [overview, *charts, net_chart, roll, *statements, notes])
