"""Settlement over real gRPC against a real ledger: a scripted period, closing, reports, audit."""

from __future__ import annotations

import csv
import io

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from tests.settlement import scripted_month as month


def selector(period_id, start_us, end_us):
    return spb.PeriodSelector(
        period_id=period_id,
        start_time=timestamp_from_micros(start_us),
        end_time=timestamp_from_micros(end_us),
    )


def nets(settlement_message):
    return {s.partner_id: s.net_cents for s in settlement_message.statements}


def set_agreement_with(settlement):
    def set_agreement(message):
        settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=message))

    return set_agreement


def test_scripted_period_closes_with_hand_computed_statements(settlement, ledger_stub):
    month.setup_ledger(ledger_stub)
    start, end, late_hold = month.script_period(ledger_stub, set_agreement_with(settlement))
    # The hold made inside the period is captured after it ended: it belongs to the next period.
    month.transfer(
        ledger_stub,
        "h2-post",
        "",
        "",
        50,
        "",
        lpb.TRANSFER_CODE_REDEEM,
        lpb.TRANSFER_KIND_POST_PENDING,
        partner="fuel",
        receipt=late_hold,
        pending_id=late_hold,
    )

    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=selector("p1", start, end))).settlement
    assert preview.state == spb.PERIOD_STATE_OPEN
    assert nets(preview) == month.EXPECTED_NETS

    closed = settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("p1", start, end)))
    assert closed.closed_now
    result = closed.settlement
    assert result.state == spb.PERIOD_STATE_CLOSED
    assert nets(result) == month.EXPECTED_NETS
    assert result.netting.operator_net_cents == month.EXPECTED_OPERATOR_NET and result.netting.balanced
    fuel = next(s for s in result.statements if s.partner_id == "fuel")
    issued = [
        (line.quantity, line.unit_price, line.amount_cents)
        for line in fuel.lines
        if line.kind == spb.STATEMENT_LINE_KIND_POINTS_ISSUED
    ]
    assert issued == [(500, "0.0100", 500), (1000, "0.0120", 1200)]
    # Every line kind, each quantity x unit price rounded once, signed by who pays.
    hotel = next(s for s in result.statements if s.partner_id == "hotel")
    assert [
        (spb.StatementLineKind.Name(line.kind), line.currency_code, line.quantity, line.unit_price, line.amount_cents)
        for line in hotel.lines
    ] == [
        ("STATEMENT_LINE_KIND_POINTS_ISSUED", "HOTELPTS", 60_000, "0", 0),
        ("STATEMENT_LINE_KIND_POINTS_REDEEMED", "PTS", 300, "0.0080", -240),
        ("STATEMENT_LINE_KIND_REDEMPTION_REVERSALS", "PTS", 30, "0.0080", 24),
        ("STATEMENT_LINE_KIND_CONVERSIONS_OUT", "AIRMILES", 25_000, "0.009000", 22_500),
    ]
    assert (hotel.partner_pays_cents, hotel.partner_is_paid_cents, hotel.net_cents) == (22_524, 240, 22_284)
    retailer = next(s for s in result.statements if s.partner_id == "retailer")
    assert [(spb.StatementLineKind.Name(line.kind), line.quantity, line.amount_cents) for line in retailer.lines] == [
        ("STATEMENT_LINE_KIND_POINTS_ISSUED", 1000, 1000),
        ("STATEMENT_LINE_KIND_EARN_REVERSALS", 20, -20),
    ]
    airline = next(s for s in result.statements if s.partner_id == "airline")
    assert [(spb.StatementLineKind.Name(line.kind), line.counterparty_id) for line in airline.lines] == [
        ("STATEMENT_LINE_KIND_CONVERSIONS_IN", "hotel")
    ]
    (pts,) = [rf for rf in result.roll_forwards if rf.currency_code == "PTS"]
    assert (
        pts.opening_outstanding,
        pts.issued,
        pts.earn_reversed,
        pts.redeemed,
        pts.redemption_reversed,
        pts.expired,
    ) == (0, 2500, 20, 500, 30, 10)
    assert pts.closing_outstanding == month.EXPECTED_PTS_CLOSING

    # Idempotent: closing again returns the identical stored result and posts nothing new.
    again = settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("p1", start, end)))
    assert not again.closed_now
    assert again.settlement == result
    posted = ledger_stub.GetTransfers(
        lpb.GetTransfersRequest(ids=[f"settlement:p1:{p}" for p in month.EXPECTED_NETS]), timeout=10
    ).transfers
    assert {t.id: (t.debit_account_id, t.amount) for t in posted} == {
        "settlement:p1:retailer": ("settlement:EUR:retailer", 980),
        "settlement:p1:fuel": ("settlement:EUR:fuel", 1540),
        "settlement:p1:hotel": ("settlement:EUR:hotel", 22284),
        "settlement:p1:airline": ("operator_settlement:EUR", 22500),
    }
    balance = ledger_stub.GetBalances(lpb.GetBalancesRequest(account_ids=["operator_settlement:EUR"]), timeout=10)
    assert balance.balances[0].posted == month.EXPECTED_OPERATOR_NET

    # The next period holds the late capture (50 redeemed at fuel: -0.40).
    next_end = month.tick()
    second = settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("p2", end, next_end))).settlement
    assert nets(second) == {"fuel": -40}
    (pts2,) = [rf for rf in second.roll_forwards if rf.currency_code == "PTS"]
    assert pts2.opening_outstanding == month.EXPECTED_PTS_CLOSING and pts2.closing_outstanding == 1950

    audit = settlement.Audit(spb.AuditRequest())
    assert list(audit.findings) == []
    assert {t.currency_code: t.amount for t in audit.wallet_totals}["PTS"] == 1950

    listed = settlement.ListPeriods(spb.ListPeriodsRequest(page_size=1))
    assert [p.period_id for p in listed.periods] == ["p2"] and listed.next_page_token
    listed = settlement.ListPeriods(spb.ListPeriodsRequest(page_size=1, page_token=listed.next_page_token))
    assert [(p.period_id, p.operator_net_cents) for p in listed.periods] == [("p1", month.EXPECTED_OPERATOR_NET)]


def test_reports_carry_the_right_totals(settlement, ledger_stub):
    month.setup_ledger(ledger_stub)
    start, end, _ = month.script_period(ledger_stub, set_agreement_with(settlement))
    settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("p1", start, end)))
    period = selector("p1", start, end)

    exported = settlement.ExportReport(spb.ExportReportRequest(period=period, format=spb.REPORT_FORMAT_CSV))
    assert exported.media_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    per_partner: dict[str, int] = {}
    for row in rows:
        per_partner[row["partner_id"]] = per_partner.get(row["partner_id"], 0) + int(row["amount_cents"])
        assert round(float(row["amount_eur"]) * 100) == int(row["amount_cents"])
    assert per_partner == month.EXPECTED_NETS
    assert sum(per_partner.values()) == month.EXPECTED_OPERATOR_NET

    html = settlement.ExportReport(
        spb.ExportReportRequest(period=period, format=spb.REPORT_FORMAT_HTML)
    ).content.decode()
    assert "<svg" in html and "EUR 222,84" in html and "EUR 23,04" in html and "EUR -225,00" in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    partner_html = settlement.ExportReport(
        spb.ExportReportRequest(period=period, format=spb.REPORT_FORMAT_HTML, partner_id="hotel")
    ).content.decode()
    assert "EUR 225,00" in partner_html and "EUR 222,84" in partner_html and "EUR 0,24" in partner_html

    pdf = settlement.ExportReport(spb.ExportReportRequest(period=period, format=spb.REPORT_FORMAT_PDF))
    assert pdf.content.startswith(b"%PDF") and len(pdf.content) > 1000
    assert b"222,84" in _pdf_text(pdf.content) and b"23,04" in _pdf_text(pdf.content)


def _pdf_text(content: bytes) -> bytes:
    """Text drawn in the PDF (reportlab compresses page streams)."""
    import re
    import zlib

    chunks = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", content, re.S):
        for decode in (lambda s: zlib.decompress(_ascii85(s)), zlib.decompress, lambda s: s):
            try:
                chunks.append(decode(stream))
                break
            except Exception:
                continue
    return b"".join(chunks)


def _ascii85(data: bytes) -> bytes:
    import base64

    data = data.strip()
    if data.endswith(b"~>"):
        data = data[:-2]
    return base64.a85decode(data)


def test_reconciliation_classifies_a_partner_file(settlement, ledger_stub):
    month.setup_ledger(ledger_stub)
    start, end, _ = month.script_period(ledger_stub, set_agreement_with(settlement))
    inside = month.iso(start + 1)
    file_csv = (
        "receipt_id,store_id,terminal_id,time,type,points,currency\n"
        f"e2,s1,t1,{inside},EARN,500,PTS\n"  # matched
        f"e4,s1,t1,{inside},EARN,999,PTS\n"  # amount differs (ledger 1000)
        f"zz,s1,t1,{inside},EARN,10,PTS\n"  # missing in the ledger
        f"e2,s1,t1,{inside},EARN,500,PTS\n"  # duplicate
        # h1 (redeem 200) is missing at the partner
    ).encode()
    request = spb.ReconcileRequest(
        reconciliation_id="rec-1", partner_id="fuel", period=selector("p1", start, end), file_csv=file_csv
    )
    made = settlement.Reconcile(request)
    assert made.created
    counts = made.reconciliation.counts
    assert (
        counts.matched,
        counts.amount_differs,
        counts.missing_in_ledger,
        counts.duplicate,
        counts.missing_at_partner,
    ) == (1, 1, 1, 1, 1)
    assert [(r.receipt_id, r.status) for r in made.reconciliation.rows] == [
        ("e2", spb.MATCH_STATUS_MATCHED),
        ("e4", spb.MATCH_STATUS_AMOUNT_DIFFERS),
        ("zz", spb.MATCH_STATUS_MISSING_IN_LEDGER),
        ("e2", spb.MATCH_STATUS_DUPLICATE),
        ("h1", spb.MATCH_STATUS_MISSING_AT_PARTNER),
    ]
    again = settlement.Reconcile(request)
    assert not again.created and again.reconciliation == made.reconciliation
    stored = settlement.GetReconciliation(spb.GetReconciliationRequest(reconciliation_id="rec-1"))
    assert stored.reconciliation == made.reconciliation


def test_closing_before_the_period_ends_is_refused(settlement, ledger_stub):
    month.setup_ledger(ledger_stub)
    start = month.now_us()
    with pytest.raises(grpc.RpcError) as caught:
        settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("future", start, start + 3_600_000_000)))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_of(caught.value).reason == "PERIOD_NOT_ENDED"


def test_every_call_needs_the_admin_key(settlement):
    with pytest.raises(grpc.RpcError) as caught:
        settlement.Audit(spb.AuditRequest(), metadata=(("authorization", "Bearer wrong"),))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_finance_cli_previews_closes_and_exports(
    settlement, settlement_server, ledger_stub, tmp_path, monkeypatch, capsys
):
    from services.settlement import cli

    month.setup_ledger(ledger_stub)
    start, end, _ = month.script_period(ledger_stub, set_agreement_with(settlement))
    monkeypatch.setenv("COALITION_SETTLEMENT_ADDRESS", settlement_server.address)
    monkeypatch.setenv("COALITION_ADMIN_API_KEY", "test-admin-key-settlement")
    window = ["p1", "--start", _iso(start), "--end", _iso(end)]
    assert cli.main(["preview", *window]) == 0
    assert "EUR 23,04" in capsys.readouterr().out
    assert cli.main(["close", *window]) == 1  # a dry run without --yes
    assert "dry run: p1 is NOT closed" in capsys.readouterr().out
    assert cli.main(["close", *window, "--yes"]) == 0
    output = tmp_path / "overview.pdf"
    assert cli.main(["export", *window, "--format", "pdf", "--output", str(output)]) == 0
    assert output.read_bytes().startswith(b"%PDF")
    assert cli.main(["audit"]) == 0
    assert cli.main(["close", "2999-01", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "PERIOD_NOT_CONTIGUOUS" in err
    assert "hint: close the window from" in err and "coalition-finance close gap-2999-01 --start" in err


def _iso(micros: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat()


def _demo_ledger(ledger_stub) -> None:
    """Some of the demo partners' currencies and accounts on the ledger, as partners' demo seed makes them."""
    for code, scale, owner in (("PTS", 0, "operator"), ("HOTELPTS", 0, "grand-hotels"), ("AIRMILES", 0, "skyair")):
        currency = lpb.Currency(code=code, scale=scale, owner_id=owner)
        ledger_stub.RegisterCurrency(lpb.RegisterCurrencyRequest(currency=currency), timeout=10)
    accounts = [
        ("issuance:PTS:fuelco", "PTS", month.DEBIT, "fuelco", "partner_issuance", False),
        ("issuance:HOTELPTS:grand-hotels", "HOTELPTS", month.DEBIT, "grand-hotels", "partner_issuance", False),
        ("issuance:AIRMILES:skyair", "AIRMILES", month.DEBIT, "skyair", "partner_issuance", False),
        ("exchange:AIRMILES:HOTELPTS", "AIRMILES", month.DEBIT, "operator", "operator_exchange", False),
        ("wallet:PTS:m1", "PTS", month.CREDIT, "m1", "member_wallet", True),
    ]
    request = lpb.CreateAccountsRequest(
        accounts=[
            lpb.Account(id=i, currency_code=c, normal_side=side, owner_id=o, kind=k, no_overdraft=n)
            for i, c, side, o, k, n in accounts
        ]
    )
    results = ledger_stub.CreateAccounts(request, timeout=10).results
    assert all(r.status != lpb.ITEM_STATUS_FAILED for r in results), results


def _seed_demo_twice(settlement_server) -> None:
    import asyncio

    from services.settlement import server as settlement_server_module

    for _ in range(2):
        asyncio.run_coroutine_threadsafe(settlement_server_module.seed_demo(), settlement_server._loop).result(30)


def test_demo_seed_prices_the_demo_partners_so_a_preview_works(settlement, settlement_server, ledger_stub, monkeypatch):
    monkeypatch.setenv("COALITION_ENV", "development")  # what `make run` sets
    _demo_ledger(ledger_stub)
    start = month.tick()
    month.transfer(ledger_stub, "d1", "issuance:PTS:fuelco", "wallet:PTS:m1", 100, "PTS", lpb.TRANSFER_CODE_EARN)
    end = month.tick()
    _seed_demo_twice(settlement_server)
    listed = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest(page_size=2))
    assert len(listed.agreements) == 2 and listed.next_page_token
    listed = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest()).agreements
    assert [a.agreement_id for a in listed] == ["demo-fuelco", "demo-grand-hotels", "demo-skyair"]
    skyair = settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest(partner_id="skyair")).agreements
    assert [(c.from_currency_code, c.to_currency_code) for c in skyair[0].conversion_prices] == [
        ("HOTELPTS", "AIRMILES")
    ]
    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=selector("demo", start, end)))
    assert nets(preview.settlement) == {"fuelco": 100}


def test_demo_seed_prices_nobody_when_the_ledger_lists_partners_outside_the_demo(
    settlement, settlement_server, ledger_stub, monkeypatch
):
    # The scripted month's partners (retailer, fuel, hotel, airline) are not the demo's: a real
    # coalition, where a demo price would bill a partner without an agreement at EUR 0.01.
    monkeypatch.setenv("COALITION_ENV", "development")
    month.setup_ledger(ledger_stub)
    _seed_demo_twice(settlement_server)
    assert list(settlement.ListPriceAgreements(spb.ListPriceAgreementsRequest()).agreements) == []
