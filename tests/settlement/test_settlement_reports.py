"""Reports of DOMAIN.md's worked illustration, rendered without servers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
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
