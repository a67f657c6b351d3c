"""Statements as documents, without servers: billing details validation, tax, dates, numbering,
store lines, and the rendered HTML and PDF (same sections, page X of Y, DRAFT on a preview)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from services.common.db import Database, DatabaseOptions
from services.settlement import document_store, documents, reports
from services.settlement.documents import BillingDetails, StoreActivity
from services.settlement.model import LineKind, SettlementRuleError
from services.settlement.reports.sections import build_report
from services.settlement.server import MIGRATIONS, VERSION_TABLE
from tests.settlement.test_settlement_model import agreement
from tests.settlement.test_settlement_reports import _pdf_text, worked_illustration
from tests.support.databases import new_database_url
from tests.support.migrations import migrate

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
PARTNER = BillingDetails(
    "Fuel Stations B.V.", "Dam 1\n1012 JS Amsterdam", "NL123456789B01", "NL91ABNA0417164300", "ap@fuel.example"
)
OPERATOR = BillingDetails(
    "Coalition Operator GmbH", "Hauptstr. 1\n10115 Berlin", "DE123456789", "DE89370400440532013000"
)


def test_billing_details_are_normalised_and_checked():
    raw = replace(PARTNER, iban="nl91 abna 0417 1643 00", vat_id="nl 1234.56789.B01")
    assert documents.validate_billing_details(raw) == PARTNER
    for details, reason in (
        (replace(PARTNER, iban="NL91ABNA0417164301"), "INVALID_IBAN"),  # mod-97 checksum fails
        (replace(PARTNER, iban="NL91"), "INVALID_IBAN"),
        (replace(PARTNER, vat_id="123456789"), "INVALID_VAT_ID"),
        (replace(PARTNER, billing_email="not-an-address"), "INVALID_BILLING_EMAIL"),
        (replace(PARTNER, legal_name=""), "INVALID_BILLING_DETAILS"),
        (replace(PARTNER, legal_name="x" * 201), "INVALID_BILLING_DETAILS"),
        (replace(PARTNER, address="Dam 1\x00"), "INVALID_BILLING_DETAILS"),
    ):
        with pytest.raises(SettlementRuleError) as error:
            documents.validate_billing_details(details)
        assert error.value.reason == reason
    # The operator's details may go without an e-mail address.
    assert documents.validate_billing_details(OPERATOR, email_required=False) == OPERATOR


def test_the_version_in_effect_is_the_latest_started():
    versions = [
        documents.BillingVersion("v1", "fuel", 100, PARTNER),
        documents.BillingVersion("v2", "fuel", 200, replace(PARTNER, legal_name="Fuel Renamed B.V.")),
    ]
    assert documents.billing_in_effect(versions, "fuel", 99) is None
    assert documents.billing_in_effect(versions, "fuel", 150) == PARTNER
    assert documents.billing_in_effect(versions, "fuel", 200).legal_name == "Fuel Renamed B.V."
    assert documents.billing_in_effect(versions, "hotel", 300) is None


def test_tax_is_rounded_half_even_once_on_the_net_with_its_sign():
    assert documents.tax_cents(340_000, Decimal("21")) == 71_400
    assert documents.tax_cents(-240_000, Decimal("21")) == -50_400  # the operator pays: tax on the partner's supply
    assert documents.tax_cents(50, Decimal("1")) == 0  # 0.5 cent -> 0 (even)
    assert documents.tax_cents(150, Decimal("1")) == 2  # 1.5 cents -> 2 (even)
    assert documents.tax_cents(-150, Decimal("1")) == -2
    assert documents.tax_cents(12_345, Decimal("0")) == 0
    assert documents.parse_tax_rate("") == 0 and documents.parse_tax_rate("20.5") == Decimal("20.5")
    for bad in ("-1", "100.01", "abc", "1.00001", "NaN"):
        with pytest.raises(SettlementRuleError):
            documents.parse_tax_rate(bad)


def test_issue_date_is_the_close_date_in_the_coalition_zone_and_due_follows_the_terms():
    late_evening_utc = 1_793_487_600_000_000 - 1_800_000_000  # 2026-10-31T22:30Z = 23:30 in Amsterdam
    assert documents.issue_date(late_evening_utc, AMSTERDAM) == date(2026, 10, 31)
    assert documents.issue_date(late_evening_utc + 3_600_000_000, AMSTERDAM) == date(2026, 11, 1)
    assert documents.due_date(date(2026, 11, 1), 30) == date(2026, 12, 1)
    assert documents.statement_number(documents.statement_number_series(date(2026, 11, 1)), 7) == "ST-2026-000007"


def test_a_document_takes_terms_and_tax_from_the_agreement_in_effect():
    statement = worked_illustration().statement("fuel")
    terms = replace(agreement("fuel"), payment_terms_days=14, tax_rate_percent=Decimal("21"), tax_note="VAT 21 %")
    document = documents.build_document(statement, terms, PARTNER, OPERATOR, {}, date(2026, 11, 2))
    assert (document.net_cents, document.tax_cents, document.gross_cents) == (340_000, 71_400, 411_400)
    assert document.due_date == date(2026, 11, 16) and document.draft and document.tax_note == "VAT 21 %"
    assert documents.payment_sentence(document) == "fuel pays the operator the gross amount by 2026-11-16"
    default = documents.build_document(statement, agreement("fuel"), None, None, {}, date(2026, 11, 2))
    assert default.payment_terms_days == 30 and default.gross_cents == default.net_cents


def test_store_lines_count_transactions_per_store_and_currency():
    activity = [
        StoreActivity("fuel", "partner_issuance", "EARN", "PTS", "f-2", 300, 0, 3),
        StoreActivity("fuel", "partner_issuance", "EARN", "PTS", "f-1", 200, 0, 2),
        StoreActivity("fuel", "partner_redemption", "REDEEM", "PTS", "f-1", 0, 50, 1),
        StoreActivity("fuel", "partner_issuance", "REVERSAL", "PTS", "f-1", 0, 20, 1),
        StoreActivity("fuel", "partner_issuance", "EXPIRY", "PTS", "", 5, 0, 1),  # not a store line
    ]
    assert documents.store_lines(activity)["fuel"] == (
        documents.StoreLine("f-1", LineKind.POINTS_ISSUED, "PTS", 2, 200),
        documents.StoreLine("f-1", LineKind.EARN_REVERSALS, "PTS", 1, 20),
        documents.StoreLine("f-1", LineKind.POINTS_REDEEMED, "PTS", 1, 50),
        documents.StoreLine("f-2", LineKind.POINTS_ISSUED, "PTS", 3, 300),
    )


@pytest.fixture
def database(backend, tmp_path):
    url, cleanup = new_database_url(backend, tmp_path, "settlement")
    database = Database(DatabaseOptions(url))
    migrate(database, MIGRATIONS, VERSION_TABLE, "head", False)
    yield database
    database.dispose()
    cleanup()


def _text_of(content: bytes) -> str:
    """The PDF's shown strings with PDF string escapes undone."""
    return re.sub(r"\\(.)", r"\1", _pdf_text(content))


class _Rollback(Exception):
    pass


def test_statement_numbers_are_gapless_and_a_rolled_back_close_gives_its_numbers_back(database):
    with database.writer.begin() as connection:
        assert document_store.next_numbers(connection, "ST-2026", 2) == ["ST-2026-000001", "ST-2026-000002"]
    with pytest.raises(_Rollback), database.writer.begin() as connection:
        assert document_store.next_numbers(connection, "ST-2026", 3)[0] == "ST-2026-000003"
        raise _Rollback  # the close failed after numbering: nothing is used up
    with database.writer.begin() as connection:
        assert document_store.next_numbers(connection, "ST-2026", 1) == ["ST-2026-000003"]
        assert document_store.next_numbers(connection, "ST-2027", 1) == ["ST-2027-000001"]
        assert document_store.next_numbers(connection, "ST-2026", 0) == []


def _with_documents(settlement, closed: bool):
    lines = {"fuel": (documents.StoreLine("f-1", LineKind.POINTS_ISSUED, "PTS", 12, 500_000),)}
    docs = tuple(
        documents.build_document(
            s,
            replace(agreement(s.partner_id), tax_rate_percent=Decimal("21"), tax_note="VAT 21 %"),
            PARTNER,
            OPERATOR,
            lines,
            date(2026, 11, 2),
            f"ST-2026-{n:06d}" if closed else "",
        )
        for n, s in enumerate(settlement.statements, start=1)
    )
    return replace(settlement, closed=closed, documents=docs)


SECTIONS = ("Parties", "Lines", "Totals (EUR)", "Lines per store", "Notes")
OVERVIEW_SECTIONS = (
    "Partners",
    "PTS issued and redeemed per partner",
    "Net positions in EUR",
    "Points liability roll-forward",
    "Statement: fuel",
)


def test_the_pdf_has_the_html_sections_page_numbers_and_draft_only_on_a_preview():
    preview = _with_documents(worked_illustration(), closed=False)
    closed = _with_documents(worked_illustration(), closed=True)
    for settlement, draft in ((preview, True), (closed, False)):
        for partner in ("fuel", ""):
            html = reports.render(settlement, "html", partner, AMSTERDAM).content.decode()
            pdf = _text_of(reports.render(settlement, "pdf", partner, AMSTERDAM).content)
            report = build_report(settlement, partner, AMSTERDAM)
            for section in report.sections:  # the same sections, by construction and on paper
                assert section.title.replace("&", "&amp;") in html
                assert section.title in pdf, section.title
            for title in SECTIONS + (() if partner else OVERVIEW_SECTIONS):
                assert title in pdf
            pages = re.findall(r"page (\d+) of (\d+)", pdf)
            assert pages and pages[0] == ("1", pages[0][1]) and all(total == pages[0][1] for _, total in pages)
            assert ("DRAFT" in pdf) == draft and ('class="watermark"' in html) == draft
            assert "Sign convention: a positive amount is paid by the partner" in pdf
            assert "Fuel Stations B.V." in pdf and "NL91ABNA0417164300" in pdf and "Coalition Operator GmbH" in pdf
            assert "EUR 714,00" in pdf and "EUR 4.114,00" in pdf and "f-1" in pdf  # tax, gross, store line
    assert "ST-2026-000001" in _text_of(reports.render(closed, "pdf", "fuel", AMSTERDAM).content)
    overview = _text_of(reports.render(closed, "pdf", "", AMSTERDAM).content)
    assert "they agree" in overview and "fuel-0" in overview  # netting check and agreement ids


def test_the_operator_details_come_from_settings_and_are_checked_at_start(monkeypatch):
    from services.common.config import ConfigError
    from services.settlement.server import operator_billing_from_env

    monkeypatch.setenv("COALITION_ENV", "production")
    assert operator_billing_from_env() is None
    monkeypatch.setenv("COALITION_OPERATOR_LEGAL_NAME", OPERATOR.legal_name)
    monkeypatch.setenv("COALITION_OPERATOR_ADDRESS", "Hauptstr. 1\\n10115 Berlin")
    monkeypatch.setenv("COALITION_OPERATOR_VAT_ID", OPERATOR.vat_id)
    monkeypatch.setenv("COALITION_OPERATOR_IBAN", OPERATOR.iban)
    assert operator_billing_from_env() == OPERATOR
    monkeypatch.setenv("COALITION_OPERATOR_IBAN", "DE89370400440532013001")
    with pytest.raises(ConfigError, match="IBAN"):
        operator_billing_from_env()


def _pages(content: bytes) -> list[list[str]]:
    """The shown strings of each page stream, in drawing order, PDF escapes undone."""
    import base64
    import zlib

    pages = []
    for match in re.finditer(
        rb"/Filter \[ /ASCII85Decode /FlateDecode \][^>]*>>\s*stream\r?\n(.*?~>)\s*endstream", content, re.S
    ):
        data = zlib.decompress(base64.a85decode(match.group(1).strip(), adobe=True))
        shown = re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", data)
        pages.append([re.sub(r"\\(.)", r"\1", s.decode("latin-1")) for s in shown])
    return pages


def test_no_heading_is_left_alone_at_a_page_end():
    """Many partners make many pages; on each, the last body text before the footer is no heading."""
    base = worked_illustration()
    statements = tuple(replace(s, partner_id=f"{s.partner_id}-{n:02d}") for n in range(8) for s in base.statements)
    settlement = _with_documents(replace(base, statements=tuple(sorted(statements, key=lambda s: s.partner_id))), True)
    content = reports.render(settlement, "pdf", "", AMSTERDAM).content
    titles = {section.title for section in build_report(settlement, "", AMSTERDAM).sections}
    pages = _pages(content)
    assert len(pages) > 10
    for number, strings in enumerate(pages, start=1):
        body = strings[:-2]  # the footer: the document's title, then "page X of Y"
        assert strings[-1] == f"page {number} of {len(pages)}"
        assert body and body[-1] not in titles, (number, body[-3:])
