"""Finance reports of a period: CSV for spreadsheets, self-contained HTML and PDF for people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from zoneinfo import ZoneInfo

from services.settlement.model import PeriodSettlement
from services.settlement.scheme import PeriodWarning

FORMATS = ("csv", "html", "pdf", "journal-csv", "beancount", "statement-csv")


@dataclass(frozen=True, slots=True)
class Document:
    content: bytes
    media_type: str
    file_name: str


def render(
    settlement: PeriodSettlement,
    fmt: str,
    partner_id: str = "",
    time_zone: ZoneInfo | None = None,
    warnings: Sequence[PeriodWarning] = (),
) -> Document:
    """`partner_id` empty: the overview of all partners; else that partner's statement (HTML, PDF)
    or lines (the CSV formats). `warnings`: the preview's, shown in HTML and beancount."""
    zone = time_zone or ZoneInfo("Europe/Amsterdam")
    subject = partner_id or "overview"
    stem = f"settlement-{settlement.period_id}-{subject}"
    if fmt == "csv":
        from services.settlement.reports.csv_report import render_csv

        return Document(render_csv(settlement, partner_id).encode(), "text/csv; charset=utf-8", f"{stem}.csv")
    if fmt == "html":
        from services.settlement.reports.html_report import render_html

        html = with_warnings(render_html(settlement, partner_id, zone), warnings)
        return Document(html.encode(), "text/html; charset=utf-8", f"{stem}.html")
    if fmt == "pdf":
        from services.settlement.reports.pdf_report import render_pdf

        return Document(render_pdf(settlement, partner_id, zone), "application/pdf", f"{stem}.pdf")
    if fmt == "journal-csv":
        from services.settlement.reports.journal import render_journal_csv

        return Document(
            render_journal_csv(settlement, zone, partner_id).encode(), "text/csv; charset=utf-8", f"{stem}-journal.csv"
        )
    if fmt == "beancount":
        from services.settlement.reports.journal import render_beancount

        text = render_beancount(settlement, zone, partner_id, warnings)
        return Document(text.encode(), "text/plain; charset=utf-8", f"{stem}.beancount")
    if fmt == "statement-csv":
        from services.settlement.reports.statement_csv import render_statement_csv

        text = render_statement_csv(settlement, partner_id)
        return Document(text.encode(), "text/csv; charset=utf-8", f"{stem}-statements.csv")
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")


def with_warnings(html: str, warnings: Sequence[PeriodWarning]) -> str:
    """The preview's warnings as a block at the top of the page (kept out of the renderer's layout)."""
    if not warnings:
        return html
    items = "".join(f"<li>{escape(w.kind.value)}: {escape(w.message)}</li>" for w in warnings)
    block = (
        '<div class="warnings" style="border:2px solid #c05621;background:#fffaf0;padding:6px 10px">'
        f"<strong>Warnings</strong><ul>{items}</ul></div>"
    )
    return html.replace("<body>", "<body>" + block, 1)
