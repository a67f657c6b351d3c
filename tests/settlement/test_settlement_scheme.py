"""The period scheme, preview warnings and the accounting exports, without servers (scheme.py, journal.py)."""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.settlement import cli, model, scheme
from services.settlement import documents as documents_module
from services.settlement.model import AgreementBook, PeriodSettlement
from services.settlement.reports import journal, render
from services.settlement.scheme import ClosedSpan, WarningKind
from tests.settlement.test_settlement_model import OWNERS, agreement, exchange, issuance, redemption

ZONE = ZoneInfo("Europe/Amsterdam")


def us(*parts) -> int:
    return int(datetime(*parts, tzinfo=ZONE).timestamp()) * 1_000_000


DEC, MID_DEC, JAN, FEB = us(2026, 12, 1), us(2026, 12, 16), us(2027, 1, 1), us(2027, 2, 1)
# A custom period closed by mistake: 1 to 16 December.
SPAN = ClosedSpan("dec-early", DEC, "dec-early", MID_DEC)


def test_a_preview_shows_only_what_follows_the_last_closed_period():
    assert scheme.open_part(SPAN, DEC, JAN) == (MID_DEC, JAN)  # preview 2026-12 after the custom close
    assert scheme.open_part(SPAN, DEC, MID_DEC) is None  # all of it settled
    assert scheme.open_part(SPAN, JAN, FEB) == (JAN, FEB)  # after a gap: all of it (closing it is refused)
    assert scheme.open_part(None, DEC, JAN) == (DEC, JAN)
    warning = scheme.overlap_warning(SPAN, "2026-12", DEC, JAN, ZONE)
    assert warning.kind is WarningKind.OVERLAPS_CLOSED_PERIOD and warning.period_id == "dec-early"
    assert (warning.start_us, warning.end_us) == (MID_DEC, JAN)
    assert "close it as period 2026-12-rest (start 2026-12-16T00:00:00+01:00" in warning.message


def test_a_refused_close_names_the_rest_of_its_window_or_the_gap_before_it():
    rest = scheme.next_window(SPAN, "2026-12", DEC, JAN, ZONE)
    assert (rest.period_id, rest.start_us, rest.end_us) == ("2026-12-rest", MID_DEC, JAN)
    monthly = ClosedSpan("2026-10", us(2026, 10, 1), "2026-11", DEC)
    gap = scheme.next_window(monthly, "2027-01", JAN, FEB, ZONE)
    assert (gap.period_id, gap.start_us, gap.end_us) == ("2026-12", DEC, JAN)  # the missing month, by its id
    assert scheme.next_window(monthly, "2026-11", us(2026, 11, 1), DEC, ZONE) is None  # settled already
    summer = ClosedSpan("2026-06", us(2026, 6, 1), "2026-06", us(2026, 7, 1))  # CEST: +02:00
    july = scheme.next_window(summer, "2026-08", us(2026, 8, 1), us(2026, 9, 1), ZONE)
    assert july.period_id == "2026-07" and scheme.iso(july.start_us, ZONE) == "2026-07-01T00:00:00+02:00"
    long_id = "x" * 64
    assert len(scheme.next_window(SPAN, long_id, DEC, JAN, ZONE).period_id) == 64


def test_a_partner_without_a_price_is_left_out_of_a_preview_and_named_while_the_others_preview():
    lines = [
        issuance("retailer", "EARN", debits=1000),
        redemption("hotel", "REDEEM", credits=300),
        exchange("HOTELPTS", "AIRMILES", credits=60_000),
        exchange("AIRMILES", "HOTELPTS", debits=25_000),
    ]
    book = AgreementBook([agreement("retailer")])  # nobody else has a price
    movements = model.movements_from_activity(lines, OWNERS)
    with pytest.raises(model.SettlementRuleError):  # a close refuses the period
        scheme.price_or_leave_out(movements, book, 0, OWNERS, False, None)
    missing: list[tuple[str, str]] = []
    priced = scheme.price_or_leave_out(movements, book, 0, OWNERS, False, missing)
    statements = model.build_statements(priced)
    assert [(s.partner_id, s.net_cents) for s in statements] == [("retailer", 1000)]
    assert model.netting(statements).balanced  # both sides of the unpriced conversion are left out
    warnings = scheme.price_missing_warnings(missing)
    assert [(w.partner_id, w.currency_code) for w in warnings] == [
        ("airline", "AIRMILES"),
        ("hotel", "AIRMILES"),
        ("hotel", "PTS"),
    ]
    assert all(w.kind is WarningKind.PRICE_MISSING for w in warnings)


def test_activity_before_the_first_period_is_named_per_partner_and_currency():
    lines = [issuance("retailer", "EARN", debits=1200), redemption("fuel", "REDEEM", credits=40)]
    movements = model.movements_from_activity(lines, OWNERS)
    warnings = scheme.unbilled_warnings(movements, DEC, "", ZONE)
    assert [(w.partner_id, w.currency_code) for w in warnings] == [("fuel", "PTS"), ("retailer", "PTS")]
    assert "1,200 issued" in warnings[1].message and "2026-12-01T00:00:00+01:00" in warnings[1].message
    assert "close a first period whose start is at or before the ledger's first transfer" in warnings[1].message


def _settlement() -> PeriodSettlement:
    lines = [
        issuance("retailer", "EARN", debits=1000),
        issuance("retailer", "REVERSAL", credits=20),
        redemption("fuel", "REDEEM", credits=200),
        exchange("HOTELPTS", "AIRMILES", credits=60_000),
        exchange("AIRMILES", "HOTELPTS", debits=25_000),
    ]
    agreements = [
        agreement("retailer"),
        agreement("fuel"),
        agreement("hotel", currency="HOTELPTS"),
        agreement("airline", currency="AIRMILES", conversions=[("HOTELPTS", "AIRMILES", "0.0090")]),
    ]
    movements = model.movements_from_activity(lines, OWNERS)
    priced = model.price_movements(movements, AgreementBook(agreements), 0, OWNERS)
    return PeriodSettlement("2026-12", DEC, JAN, True, tuple(model.build_statements(priced)), (), 7)


def test_the_journal_balances_and_leaves_each_partner_account_at_its_net():
    settlement = _settlement()
    rows = list(csv.DictReader(io.StringIO(render(settlement, "journal-csv", time_zone=ZONE).content.decode())))
    assert set(rows[0]) == {"date", "account", "debit", "credit", "currency", "reference", "description"}
    cents = {}
    for row in rows:
        amount = round(float(row["debit"] or 0) * 100) - round(float(row["credit"] or 0) * 100)
        cents[row["account"]] = cents.get(row["account"], 0) + amount
        assert row["date"] == "2026-12-31" and row["currency"] == "EUR"
    assert sum(cents.values()) == 0
    nets = {s.partner_id: s.net_cents for s in settlement.statements}
    assert {a: c for a, c in cents.items() if a.startswith("Assets:Partners:")} == {
        journal.partner_account(p): n for p, n in nets.items()
    }
    assert cents["Liabilities:Points:ConversionClearing:AIRMILES"] == 0


def test_the_journal_books_each_statements_tax_so_a_partner_account_ends_at_its_gross():
    settlement = _settlement()
    taxed = {"retailer": 206, "airline": -4_725}  # 21 % of +9.80 and of -225.00, with the net's sign
    documents = tuple(
        documents_module.build_document(s, None, None, None, {}, date(2027, 1, 5)) for s in settlement.statements
    )
    documents = tuple(
        replace(d, tax_cents=taxed.get(d.partner_id, 0), gross_cents=d.net_cents + taxed.get(d.partner_id, 0))
        for d in documents
    )
    taxed_settlement = replace(settlement, documents=documents)
    cents: dict[str, int] = {}
    rows = csv.DictReader(io.StringIO(render(taxed_settlement, "journal-csv", time_zone=ZONE).content.decode()))
    for row in rows:
        amount = round(float(row["debit"] or 0) * 100) - round(float(row["credit"] or 0) * 100)
        cents[row["account"]] = cents.get(row["account"], 0) + amount
    assert sum(cents.values()) == 0
    grosses = {d.partner_id: d.gross_cents for d in documents}
    assert {a: c for a, c in cents.items() if a.startswith("Assets:Partners:")} == {
        journal.partner_account(p): g for p, g in grosses.items()
    }
    assert cents[journal.TAX_ACCOUNT] == -(206 - 4_725)  # owed on what retailer pays, reclaimed on airline's


def test_account_names_never_merge_two_ids():
    names = {journal.account_component(i) for i in ("fuel-co", "fuel_co", "Fuel-co", "FUELCO", "-x", "x")}
    assert len(names) == 6
    assert journal.account_component("fresh-mart") == "Fresh-mart"


def test_statement_csv_ends_each_partner_with_its_totals():
    settlement = _settlement()
    rows = list(csv.DictReader(io.StringIO(render(settlement, "statement-csv").content.decode())))
    totals = {(r["partner_id"], r["row"]): r["amount_eur"] for r in rows if r["row"].startswith("TOTAL_")}
    assert totals[("retailer", "TOTAL_NET")] == "9.80"
    assert totals[("fuel", "TOTAL_PARTNER_IS_PAID")] == "-1.60"
    assert totals[("airline", "TOTAL_NET")] == "-225.00"
    only = render(settlement, "statement-csv", "fuel").content.decode()
    assert "retailer" not in only and "TOTAL_NET" in only


def test_every_finance_command_has_a_description_and_examples(capsys):
    parser = cli._parser()
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert set(cli.COMMANDS) < set(subcommands.choices)  # the corrections' commands too (cli_corrections.py)
    for name in subcommands.choices:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and f"coalition-finance {name}" in text, name
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "close 2026-11                 # a dry run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["reconcile", "--help"])
    assert "receipt_id,store_id,terminal_id,time,type,points,currency" in capsys.readouterr().out
