"""PDF of the same content as the HTML reports, with reportlab (tables and bar charts)."""

from __future__ import annotations

import io
from zoneinfo import ZoneInfo

from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.settlement.model import PeriodSettlement, Statement
from services.settlement.reports.formatting import (
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

_TABLE_STYLE = TableStyle(
    [
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.grey),
        ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
    ]
)


def _statement_table(statement: Statement) -> Table:
    data = [["line", "currency", "quantity", "unit price", "amount"]]
    for line in statement.lines:
        data.append(
            [
                line_label(line),
                line.currency_code,
                points(line.quantity),
                price(line.unit_price),
                eur(line.amount_cents),
            ]
        )
    data.append(["partner pays", "", "", "", eur(statement.partner_pays_cents)])
    data.append(["partner is paid", "", "", "", eur(statement.partner_is_paid_cents)])
    data.append([f"net: {net_sentence(statement)}", "", "", "", eur(statement.net_cents)])
    table = Table(data, repeatRows=1)
    table.setStyle(_TABLE_STYLE)
    table.setStyle(TableStyle([("FONTNAME", (0, -3), (-1, -1), "Helvetica-Bold")]))
    return table


def _issued_redeemed_chart(currency_code: str, rows: list[PointsSummary]) -> Drawing:
    """One currency's bars per partner: issued and redeemed, in that currency's units."""
    drawing = Drawing(240 * mm, 75 * mm)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 20 * mm, 12 * mm, 200 * mm, 55 * mm
    chart.data = [[max(r.issued, 0) for r in rows] or [0], [max(r.redeemed, 0) for r in rows] or [0]]
    chart.categoryAxis.categoryNames = [r.partner_id for r in rows] or [""]
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labelTextFormat = lambda value: points(int(value))
    chart.bars[0].fillColor = colors.HexColor("#2b6cb0")
    chart.bars[1].fillColor = colors.HexColor("#dd6b20")
    legend = Legend()
    legend.x, legend.y = 190 * mm, 72 * mm
    legend.colorNamePairs = [
        (colors.HexColor("#2b6cb0"), f"{currency_code} issued"),
        (colors.HexColor("#dd6b20"), f"{currency_code} redeemed"),
    ]
    drawing.add(chart)
    drawing.add(legend)
    return drawing


def overview_rows(settlement: PeriodSettlement) -> list[list[str]]:
    """The overview table as drawn: one row per partner and currency, EUR on the partner's first row."""
    data = [["partner", "currency", "points issued", "points redeemed", "partner pays", "partner is paid", "net"]]
    for statement in settlement.statements:
        money = [eur(statement.partner_pays_cents), eur(statement.partner_is_paid_cents), eur(statement.net_cents)]
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
                    *(money if index == 0 else ["", "", ""]),
                ]
            )
    data.append(["operator net cash", "", "", "", "", "", eur(settlement.netting.operator_net_cents)])
    return data


def _net_chart(rows: list[tuple[str, int]]) -> Drawing:
    height = max(30, 10 * len(rows) + 20) * mm
    drawing = Drawing(240 * mm, height)
    chart = HorizontalBarChart()
    chart.x, chart.y, chart.width, chart.height = 35 * mm, 8 * mm, 180 * mm, height - 14 * mm
    chart.data = [[net / 100 for _, net in rows] or [0]]
    chart.categoryAxis.categoryNames = [p for p, _ in rows] or [""]
    chart.valueAxis.labelTextFormat = lambda value: eur(round(value * 100))
    chart.bars[0].fillColor = colors.HexColor("#2f855a")
    for index, (_, net) in enumerate(rows):
        if net < 0:
            chart.bars[(0, index)].fillColor = colors.HexColor("#c53030")
    drawing.add(chart)
    return drawing


def render_pdf(settlement: PeriodSettlement, partner_id: str, zone: ZoneInfo) -> bytes:
    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=landscape(A4),
        title=f"Settlement {settlement.period_id} {partner_id or 'overview'}",
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
    )
    story: list = []
    label = period_label(settlement, zone)
    if partner_id:
        statement = settlement.statement(partner_id) or Statement(partner_id, ())
        story += [
            Paragraph(f"Settlement statement: {partner_id}", styles["Title"]),
            Paragraph(label, styles["Normal"]),
            Spacer(1, 5 * mm),
            _statement_table(statement),
        ]
    else:
        netting = settlement.netting
        table = Table(overview_rows(settlement), repeatRows=1)
        table.setStyle(_TABLE_STYLE)
        check = "they agree" if netting.balanced else "THEY DO NOT AGREE"
        story += [
            Paragraph("Settlement overview", styles["Title"]),
            Paragraph(label, styles["Normal"]),
            Spacer(1, 5 * mm),
            table,
            Paragraph(
                f"Netting check: sum of partner nets {eur(netting.operator_net_cents)}, operator side"
                f" {eur(netting.operator_net_from_lines_cents)}: {check}.",
                styles["Normal"],
            ),
        ]
        for code, rows in points_by_currency(settlement.statements).items():
            story += [
                Paragraph(f"{code} issued and redeemed per partner", styles["Heading2"]),
                _issued_redeemed_chart(code, rows),
            ]
        story += [
            Paragraph("Net positions (positive: partner pays; negative: partner is paid)", styles["Heading2"]),
            _net_chart([(s.partner_id, s.net_cents) for s in settlement.statements]),
        ]
        for statement in settlement.statements:
            story += [
                Paragraph(f"Statement: {statement.partner_id}", styles["Heading2"]),
                _statement_table(statement),
            ]
    story.append(Spacer(1, 4 * mm))
    story.append(
        Paragraph(
            "Each line is quantity x unit price, rounded half-even to cents once; totals are sums of lines.",
            styles["Italic"],
        )
    )
    document.build(story)
    return buffer.getvalue()
