"""PDF of a report (sections.py), with reportlab: the same sections as the HTML, "page X of Y" on
every page, headings kept with what follows them, a DRAFT watermark on every page of a preview,
and one chart per currency (money charts in EUR only)."""

from __future__ import annotations

import io
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas as pdf_canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.settlement.model import PeriodSettlement
from services.settlement.reports.formatting import PointsSummary, eur, points
from services.settlement.reports.sections import (
    DRAFT_NOTE,
    NetChart,
    PointsChart,
    Report,
    Text,
    build_report,
    overview_rows,
)
from services.settlement.reports.sections import Table as ReportTable

__all__ = ["overview_rows", "render_pdf", "report_pdf"]

PAGE_SIZE = landscape(A4)
WRAP_LENGTH_MIN = 90  # characters: a longer cell wraps in a paragraph
PARTY_COLUMN_WIDTH = 85 * mm
FOOTER_LENGTH_MAX = 120  # characters of the document title in the footer
ISSUED_COLOUR = colors.HexColor("#2b6cb0")
REDEEMED_COLOUR = colors.HexColor("#dd6b20")
PAYS_COLOUR = colors.HexColor("#2f855a")
PAID_COLOUR = colors.HexColor("#c53030")


def _numbered_canvas(draft: bool, footer: str):
    """A canvas that holds every page until the end, so each can say "page X of Y"."""

    class NumberedCanvas(pdf_canvas.Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages: list[dict] = []

        def showPage(self):
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for page in self._pages:
                self.__dict__.update(page)
                self._decorate(total)
                super().showPage()
            super().save()

        def _decorate(self, total: int) -> None:
            width, height = PAGE_SIZE
            self.saveState()
            self.setFont("Helvetica", 8)
            self.setFillColor(colors.HexColor("#4a5568"))
            self.drawString(15 * mm, 8 * mm, footer[:FOOTER_LENGTH_MAX])
            self.drawRightString(width - 15 * mm, 8 * mm, f"page {self._pageNumber} of {total}")
            if draft:
                self.setFont("Helvetica-Bold", 150)
                self.setFillColor(colors.Color(0.77, 0.19, 0.19, alpha=0.13))
                self.translate(width / 2, height / 2)
                self.rotate(30)
                self.drawCentredString(0, -50, "DRAFT")
            self.restoreState()

    return NumberedCanvas


def _styles() -> dict[str, ParagraphStyle]:
    sample = getSampleStyleSheet()
    return {
        "title": sample["Title"],
        "normal": sample["Normal"],
        "cell": ParagraphStyle("cell", parent=sample["Normal"], fontSize=8, leading=10),
        "note": ParagraphStyle("note", parent=sample["Italic"], fontSize=8, textColor=colors.HexColor("#4a5568")),
        "ok": ParagraphStyle("ok", parent=sample["Normal"], backColor=colors.HexColor("#c6f6d5"), borderPadding=3),
        "bad": ParagraphStyle("bad", parent=sample["Normal"], backColor=colors.HexColor("#fed7d7"), borderPadding=3),
        "draft": ParagraphStyle(
            "draft",
            parent=sample["Normal"],
            backColor=colors.HexColor("#fefcbf"),
            borderPadding=4,
            fontName="Helvetica-Bold",
        ),
        # keepWithNext: a heading is never left alone at a page end (the template moves it with
        # the first flowable after it).
        "h2": ParagraphStyle("h2", parent=sample["Heading2"], keepWithNext=1),
        "h3": ParagraphStyle("h3", parent=sample["Heading3"], keepWithNext=1),
    }


def _table(table: ReportTable, styles) -> Table:
    def cell(value: str, index: int):
        # Long texts (labels, addresses) wrap; numbers stay one line, right-aligned.
        if index in table.numeric_columns or (len(value) <= WRAP_LENGTH_MIN and not table.equal_columns):
            return value
        return Paragraph(escape(value), styles["cell"])

    header = [table.header] if any(table.header) else []
    data = header + [[cell(v, i) for i, v in enumerate(row)] for row in table.rows]
    widths = [PARTY_COLUMN_WIDTH] * len(table.header) if table.equal_columns else None
    result = Table(data or [[""]], colWidths=widths, repeatRows=1 if header else 0, hAlign="LEFT")
    commands = [
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey),
    ]
    if header:
        commands += [("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"), ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black)]
    for column in table.numeric_columns:
        commands.append(("ALIGN", (column, 0), (column, -1), "RIGHT"))
    if table.total_rows:
        commands += [
            ("FONTNAME", (0, -table.total_rows), (-1, -1), "Helvetica-Bold"),
            ("LINEABOVE", (0, -table.total_rows), (-1, -table.total_rows), 1, colors.black),
        ]
    result.setStyle(TableStyle(commands))
    return result


def _points_chart(currency_code: str, rows: list[PointsSummary]) -> Drawing:
    """One currency's bars per partner: issued and redeemed, in that currency's units only."""
    drawing = Drawing(240 * mm, 75 * mm)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 25 * mm, 12 * mm, 195 * mm, 52 * mm
    chart.data = [[max(r.issued, 0) for r in rows] or [0], [max(r.redeemed, 0) for r in rows] or [0]]
    chart.categoryAxis.categoryNames = [r.partner_id for r in rows] or [""]
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labelTextFormat = lambda value: f"{points(int(value))} {currency_code}"
    chart.bars[0].fillColor = ISSUED_COLOUR
    chart.bars[1].fillColor = REDEEMED_COLOUR
    chart.barLabelFormat = lambda value: points(int(value))
    chart.barLabels.fontSize = 7
    chart.barLabels.nudge = 6
    legend = Legend()
    legend.x, legend.y = 190 * mm, 73 * mm
    legend.colorNamePairs = [(ISSUED_COLOUR, f"{currency_code} issued"), (REDEEMED_COLOUR, f"{currency_code} redeemed")]
    drawing.add(chart)
    drawing.add(legend)
    return drawing


def _net_chart(rows: list[tuple[str, int]]) -> Drawing:
    """Net per partner in EUR (one currency on the axis)."""
    height = max(30, 10 * len(rows) + 20) * mm
    drawing = Drawing(240 * mm, height)
    chart = HorizontalBarChart()
    chart.x, chart.y, chart.width, chart.height = 35 * mm, 8 * mm, 180 * mm, height - 14 * mm
    chart.data = [[net / 100 for _, net in rows] or [0]]  # drawing only; the figures are the labels
    chart.categoryAxis.categoryNames = [p for p, _ in rows] or [""]
    chart.valueAxis.labelTextFormat = lambda value: eur(round(value * 100))
    chart.bars[0].fillColor = PAYS_COLOUR
    for index, (_, net) in enumerate(rows):
        if net < 0:
            chart.bars[(0, index)].fillColor = PAID_COLOUR
    drawing.add(chart)
    return drawing


def _flowables(block, styles) -> list:
    if isinstance(block, ReportTable):
        return [_table(block, styles), Spacer(1, 2 * mm)]
    if isinstance(block, Text):
        style = styles.get(block.emphasis or "normal", styles["normal"])
        return [Paragraph(escape(block.text), style), Spacer(1, 2 * mm)]
    if isinstance(block, PointsChart):
        return [_points_chart(block.currency_code, block.rows)]
    if isinstance(block, NetChart):
        return [_net_chart(block.rows)]
    raise TypeError(f"no PDF for {type(block).__name__}")


def report_pdf(report: Report) -> bytes:
    styles = _styles()
    buffer = io.BytesIO()
    title = ("DRAFT " if report.draft else "") + report.title
    document = SimpleDocTemplate(
        buffer,
        pagesize=PAGE_SIZE,
        title=title,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=15 * mm,
        bottomMargin=15 * mm,
    )
    story: list = [
        Paragraph(escape(report.title), styles["title"]),
        Paragraph(escape(report.subtitle), styles["normal"]),
    ]
    if report.draft:
        story += [Spacer(1, 3 * mm), Paragraph(escape(DRAFT_NOTE), styles["draft"])]
    for section in report.sections:
        story.append(Paragraph(escape(section.title), styles["h3" if section.level == 3 else "h2"]))
        for block in section.blocks:
            story += _flowables(block, styles)
    document.build(story, canvasmaker=_numbered_canvas(report.draft, title))
    return buffer.getvalue()


def render_pdf(settlement: PeriodSettlement, partner_id: str, zone: ZoneInfo) -> bytes:
    return report_pdf(build_report(settlement, partner_id, zone))
