"""Self-contained HTML of a report (sections.py): tables, inline SVG charts, a DRAFT watermark."""

from __future__ import annotations

from html import escape
from zoneinfo import ZoneInfo

from services.settlement.model import PeriodSettlement
from services.settlement.reports.chart import issued_vs_redeemed_svg, net_positions_svg
from services.settlement.reports.sections import (
    DRAFT_NOTE,
    NetChart,
    PointsChart,
    Report,
    Table,
    Text,
    build_report,
)

STYLE = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em;color:#1a202c}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em;margin-top:1.1em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border-bottom:1px solid #cbd5e0;padding:4px 10px;text-align:left;vertical-align:top;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total td{font-weight:bold;border-top:2px solid #4a5568}
.check{padding:6px 10px;display:inline-block}.ok{background:#c6f6d5}.bad{background:#fed7d7}
.note{color:#4a5568;font-size:.9em}
.draft-banner{background:#fefcbf;border:2px solid #b7791f;padding:8px 12px;font-weight:bold}
.watermark{position:fixed;top:40%;left:0;width:100%;text-align:center;font-size:160px;font-weight:bold;
color:rgba(197,48,48,.12);transform:rotate(-30deg);pointer-events:none;z-index:10}
@media print{h2,h3{break-after:avoid}table{break-inside:auto}tr{break-inside:avoid}}
"""


def _table(table: Table) -> str:
    numeric, total = ' class="n"', ' class="total"'

    def cells(row: list[str], tag: str) -> str:
        return "".join(
            f"<{tag}{numeric if index in table.numeric_columns else ''}>{escape(value)}</{tag}>"
            for index, value in enumerate(row)
        )

    header = f"<tr>{cells(table.header, 'th')}</tr>" if any(table.header) else ""
    first_total = len(table.rows) - table.total_rows
    body = "".join(
        f"<tr{total if index >= first_total else ''}>{cells(row, 'td')}</tr>" for index, row in enumerate(table.rows)
    )
    return f"<table>{header}{body}</table>"


def _block(block) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Text):
        css = {"ok": "check ok", "bad": "check bad", "note": "note"}.get(block.emphasis, "")
        return f'<p class="{css}">{escape(block.text)}</p>' if css else f"<p>{escape(block.text)}</p>"
    if isinstance(block, PointsChart):
        return issued_vs_redeemed_svg(block.currency_code, block.rows)
    if isinstance(block, NetChart):
        return net_positions_svg(block.rows)
    raise TypeError(f"no HTML for {type(block).__name__}")


def report_html(report: Report) -> str:
    draft = (
        f'<div class="watermark" aria-hidden="true">DRAFT</div><p class="draft-banner">{escape(DRAFT_NOTE)}</p>'
        if report.draft
        else ""
    )
    body = "".join(
        f"<h{section.level}>{escape(section.title)}</h{section.level}>" + "".join(_block(b) for b in section.blocks)
        for section in report.sections
    )
    title = ("DRAFT " if report.draft else "") + report.title
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{draft}<h1>{escape(report.title)}</h1>"
        f"<p>{escape(report.subtitle)}</p>{body}</body></html>"
    )


def render_html(settlement: PeriodSettlement, partner_id: str, zone: ZoneInfo) -> str:
    return report_html(build_report(settlement, partner_id, zone))
