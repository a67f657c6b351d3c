"""The journal export of the scripted month for an accounting system: the beancount file passes
bean-check (and beancount's loader), each partner's account ends at its net, and the journal CSV
holds the same postings."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from coalition.settlement.v1 import settlement_pb2 as spb
from services.settlement.reports import journal
from tests.settlement import scripted_month as month
from tests.settlement.test_settlement_service import selector, set_agreement_with

loader = pytest.importorskip("beancount.loader", reason="beancount is in the dev extras")


def _bean_check() -> str | None:
    beside_python = Path(sys.executable).with_name("bean-check")
    return str(beside_python) if beside_python.exists() else shutil.which("bean-check")


def test_the_closed_months_journal_passes_bean_check_and_carries_every_net(settlement, ledger_stub, tmp_path):
    month.setup_ledger(ledger_stub)
    start, end, _ = month.script_period(ledger_stub, set_agreement_with(settlement))
    period = selector("p1", start, end)
    settlement.ClosePeriod(spb.ClosePeriodRequest(period=period))

    def export(fmt):
        return settlement.ExportReport(spb.ExportReportRequest(period=period, format=fmt))

    beancount = export(spb.REPORT_FORMAT_BEANCOUNT)
    assert beancount.file_name == "settlement-p1-overview.beancount"
    path = tmp_path / beancount.file_name
    path.write_bytes(beancount.content)
    checker = _bean_check()
    assert checker is not None, "bean-check comes with beancount (dev extras)"
    checked = subprocess.run([checker, str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    entries, errors, _ = loader.load_file(str(path))
    assert not errors
    balances: dict[str, Decimal] = {}
    for entry in entries:
        for posting in getattr(entry, "postings", ()):
            balances[posting.account] = balances.get(posting.account, Decimal(0)) + posting.units.number
    expected = {journal.partner_account(p): Decimal(c) / 100 for p, c in month.EXPECTED_NETS.items()}
    assert {a: b for a, b in balances.items() if a.startswith("Assets:Partners:")} == expected
    assert sum(balances.values()) == 0

    rows = list(csv.DictReader(io.StringIO(export(spb.REPORT_FORMAT_JOURNAL_CSV).content.decode())))
    debits = sum(Decimal(r["debit"]) for r in rows if r["debit"])
    credits = sum(Decimal(r["credit"]) for r in rows if r["credit"])
    assert (
        debits
        == credits
        == sum(p.units.number for e in entries for p in getattr(e, "postings", ()) if p.units.number > 0)
    )
    statements = export(spb.REPORT_FORMAT_STATEMENT_CSV).content.decode()
    totals = [r for r in csv.DictReader(io.StringIO(statements)) if r["row"] == "TOTAL_NET"]
    assert {r["partner_id"]: round(Decimal(r["amount_eur"]) * 100) for r in totals} == month.EXPECTED_NETS
