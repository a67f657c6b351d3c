"""Reports of DOMAIN.md's worked illustration, rendered without servers."""

from __future__ import annotations

import base64
import csv
import io
import re
import zlib
from decimal import Decimal
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from services.settlement import model, reports
from services.settlement.reports.formatting import eur, points
from tests.settlement.test_settlement_model import agreement, issuance, redemption, statements_for

OCTOBER_START_US = 1_790_805_600_000_000  # 2026-10-01T00:00:00+02:00
OCTOBER_END_US = 1_793_487_600_000_000  # 2026-11-01T00:00:00+01:00


def worked_illustration() -> model.PeriodSettlement:
    lines = [
        issuance("retailer", "EARN", debits=1_000_000),
        issuance("retailer", "REVERSAL", credits=20_000),
        issuance("fuel", "EARN", debits=500_000),
        redemption("fuel", "REDEEM", credits=200_000),
        redemption("hotel", "REDEEM", credits=300_000),
    ]
    statements = statements_for(lines, [agreement(p) for p in ("retailer", "fuel", "hotel")])
    return model.PeriodSettlement(
        "2026-10",
        OCTOBER_START_US,
        OCTOBER_END_US,
        True,
        tuple(statements[p] for p in sorted(statements)),
        (model.roll_forward("PTS", 0, lines),),
        42,
        OCTOBER_END_US + 1,
    )


def test_amounts_read_as_a_european_finance_team_expects():
    assert eur(980_000) == "EUR 9.800,00"
    assert eur(-240_000) == "EUR -2.400,00"
    assert eur(5) == "EUR 0,05"
    assert eur(123_456_789) == "EUR 1.234.567,89"
    assert points(1_000_000) == "1.000.000"


def test_csv_parses_back_and_sums_to_the_nets():
    document = reports.render(worked_illustration(), "csv")
    rows = list(csv.DictReader(io.StringIO(document.content.decode())))
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["partner_id"]] = totals.get(row["partner_id"], 0) + int(row["amount_cents"])
        assert Decimal(row["amount_eur"]) * 100 == int(row["amount_cents"])
    assert totals == {"retailer": 980_000, "fuel": 340_000, "hotel": -240_000}
    assert sum(Decimal(row["amount_eur"]) for row in rows) == Decimal("10800.00")


def test_html_overview_has_totals_and_charts():
    html = reports.render(worked_illustration(), "html", time_zone=ZoneInfo("Europe/Amsterdam")).content.decode()
    for figure in ("EUR 9.800,00", "EUR 3.400,00", "EUR -2.400,00", "EUR 10.800,00", "1.000.000"):
        assert figure in html
    assert html.count("<svg") == 2 and "they agree" in html
    assert "01.10.2026 00:00" in html


def test_html_and_pdf_partner_statements():
    settlement = worked_illustration()
    html = reports.render(settlement, "html", "fuel").content.decode()
    assert "EUR 5.000,00" in html and "EUR -1.600,00" in html and "fuel pays EUR 3.400,00" in html
    pdf = reports.render(settlement, "pdf", "fuel")
    assert pdf.content.startswith(b"%PDF") and pdf.file_name == "settlement-2026-10-fuel.pdf"
    overview = reports.render(settlement, "pdf")
    assert overview.content.startswith(b"%PDF") and len(overview.content) > len(pdf.content)


conversion_lines = st.lists(
    st.tuples(
        st.sampled_from(["PTS", "HOTELPTS", "AIRMILES", "FUELPTS"]),
        st.sampled_from(["PTS", "HOTELPTS", "AIRMILES", "FUELPTS"]),
        st.integers(1, 10**9),
    ).filter(lambda t: t[0] != t[1]),
    max_size=12,
)


@given(conversion_lines, st.integers(0, 10**6))
def test_netting_always_balances_for_any_conversions(conversions, price_micros):
    owners = {"PTS": "operator", "HOTELPTS": "hotel", "AIRMILES": "airline", "FUELPTS": "fuel"}
    codes = list(owners)
    prices = [(a, b, str(Decimal(price_micros) / 10**6)) for a in codes for b in codes if a != b]
    agreements = [agreement(p, currency=c, conversions=prices) for c, p in owners.items() if p != "operator"]
    lines = [
        model.Activity(f"exchange:{to}:{source}", "CONVERSION", to, units, 0, "operator", "operator_exchange")
        for source, to, units in conversions
    ]
    statements = list(statements_for(lines, agreements, owners=owners).values())
    assert model.netting(statements).balanced


def test_csv_text_cells_cannot_run_as_spreadsheet_formulas():
    hostile = '=HYPERLINK("http://evil","x")'
    line = model.StatementLine(
        model.LineKind.POINTS_REDEEMED, "PTS", "", "", 1_000, Decimal("0.0080"), -800, "@SUM(A1)", False
    )
    conversion = model.StatementLine(
        model.LineKind.CONVERSIONS_OUT, "AIRMILES", "HOTELPTS", "+cmd", 10, Decimal("1"), 1_000, "\tx", False
    )
    settlement = model.PeriodSettlement(
        "-p1",
        OCTOBER_START_US,
        OCTOBER_END_US,
        True,
        (model.Statement(hostile, (line,)), model.Statement("\rpartner", (conversion,))),
        (),
        1,
    )
    rows = list(csv.DictReader(io.StringIO(reports.render(settlement, "csv").content.decode(), newline="")))
    assert [(r["period_id"], r["partner_id"], r["counterparty_id"], r["agreement_id"]) for r in rows] == [
        ("'-p1", "'" + hostile, "", "'@SUM(A1)"),
        ("'-p1", "'\rpartner", "'+cmd", "'\tx"),
    ]
    # Numbers stay numbers, negative ones included.
    assert [(r["quantity"], r["unit_price_eur"], r["amount_cents"], r["amount_eur"]) for r in rows] == [
        ("1000", "0.0080", "-800", "-8.00"),
        ("10", "1", "1000", "10.00"),
    ]


# ---------------------------------------------------------------- currencies are never added


def two_currency_settlement() -> model.PeriodSettlement:
    """The hotel issues its own HOTELPTS and the coalition's PTS in one period (issue 7's example)."""
    hotel = model.PriceAgreement(
        "hotel-v1",
        "hotel",
        0,
        (
            model.PointPrice("PTS", Decimal("0.0100"), Decimal("0.0080")),
            model.PointPrice("HOTELPTS", Decimal("0.0050"), Decimal("0.0040")),
        ),
    )
    lines = [
        issuance("hotel", "EARN", debits=83_401, currency="HOTELPTS"),
        issuance("hotel", "EARN", debits=1_131, currency="PTS"),
        redemption("hotel", "REDEEM", credits=2_000, currency="HOTELPTS"),
        redemption("hotel", "REDEEM", credits=500, currency="PTS"),
        issuance("fuel", "EARN", debits=7_000),
    ]
    owners = {"PTS": "operator", "HOTELPTS": "hotel", "EUR": "operator"}
    statements = statements_for(lines, [hotel, agreement("fuel")], owners=owners)
    return model.PeriodSettlement(
        "2026-10", OCTOBER_START_US, OCTOBER_END_US, True, tuple(statements[p] for p in sorted(statements)), (), 1
    )


class _Tables(HTMLParser):
    """Every table row's cells and every SVG <title>, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.titles: list[str] = []
        self._cell: list[str] | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._in_title = True
            self.titles.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.titles[-1] += data


def _pdf_text(content: bytes) -> str:
    """The text-showing strings of a reportlab PDF: its page streams are ASCII85, then Flate encoded."""
    strings = []
    for match in re.finditer(
        rb"/Filter \[ /ASCII85Decode /FlateDecode \][^>]*>>\s*stream\r?\n(.*?~>)\s*endstream", content, re.S
    ):
        data = zlib.decompress(base64.a85decode(match.group(1).strip(), adobe=True))
        strings.extend(s.decode("latin-1") for s in re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", data))
    return "\n".join(strings)


def test_overview_points_are_per_currency_and_never_added():
    """84.532 would be 83.401 HOTELPTS + 1.131 PTS: it must appear nowhere, in no format."""
    settlement = two_currency_settlement()
    html = reports.render(settlement, "html").content.decode()
    parser = _Tables()
    parser.feed(html)
    overview = [row[:4] for row in parser.rows if row and row[0] in ("hotel", "fuel") and len(row) == 8]
    assert overview == [
        ["fuel", "PTS", "7.000", "0"],
        ["hotel", "HOTELPTS", "83.401", "2.000"],
        ["hotel", "PTS", "1.131", "500"],
    ]
    # One chart per currency, each bar in its own currency's units.
    assert html.count("<svg") == 3
    assert "hotel issued: 83.401 HOTELPTS" in parser.titles and "hotel issued: 1.131 PTS" in parser.titles
    assert "fuel issued: 7.000 PTS" in parser.titles
    assert "84.532" not in html and "2.500" not in html

    pdf_text = _pdf_text(reports.render(settlement, "pdf").content)
    assert "83.401" in pdf_text and "1.131" in pdf_text and "HOTELPTS issued" in pdf_text
    assert "84.532" not in pdf_text and "2.500" not in pdf_text


def test_the_pdf_overview_is_drawn_from_per_currency_rows():
    from services.settlement.reports.formatting import points_by_currency
    from services.settlement.reports.pdf_report import overview_rows

    settlement = two_currency_settlement()
    rows = overview_rows(settlement)
    assert [row[:4] for row in rows[1:-1]] == [
        ["fuel", "PTS", "7.000", "0"],
        ["hotel", "HOTELPTS", "83.401", "2.000"],
        ["hotel", "PTS", "1.131", "500"],
    ]
    charts = points_by_currency(settlement.statements)
    assert {code: [(r.partner_id, r.issued, r.redeemed) for r in rows] for code, rows in charts.items()} == {
        "HOTELPTS": [("hotel", 83_401, 2_000)],
        "PTS": [("fuel", 7_000, 0), ("hotel", 1_131, 500)],
    }
