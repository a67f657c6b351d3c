"""Finance reports of a period: CSV for spreadsheets, self-contained HTML and PDF for people."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.settlement.model import PeriodSettlement

FORMATS = ("csv", "html", "pdf")


@dataclass(frozen=True, slots=True)
class Document:
    content: bytes
    media_type: str
    file_name: str


def render(settlement: PeriodSettlement, fmt: str, partner_id: str = "", time_zone: ZoneInfo | None = None) -> Document:
    """`partner_id` empty: the overview of all partners; else that partner's statement (HTML, PDF)."""
    zone = time_zone or ZoneInfo("Europe/Amsterdam")
    subject = partner_id or "overview"
    stem = f"settlement-{settlement.period_id}-{subject}"
    if fmt == "csv":
        from services.settlement.reports.csv_report import render_csv

        return Document(render_csv(settlement, partner_id).encode(), "text/csv; charset=utf-8", f"{stem}.csv")
    if fmt == "html":
        from services.settlement.reports.html_report import render_html

        html = render_html(settlement, partner_id, zone)
        return Document(html.encode(), "text/html; charset=utf-8", f"{stem}.html")
    if fmt == "pdf":
        from services.settlement.reports.pdf_report import render_pdf

        return Document(render_pdf(settlement, partner_id, zone), "application/pdf", f"{stem}.pdf")
    raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
