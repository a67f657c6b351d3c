"""Statements as documents through real gRPC servers (ledger + settlement): billing details
versions, DRAFT previews, gapless numbers at close, tax and gross posted on the ledger, store lines."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.settlement.v1 import settlement_pb2 as spb
from services.common.errors import error_info_of
from services.common.timeconv import timestamp_from_micros
from services.settlement.documents import BillingDetails
from services.settlement.server import start
from tests.settlement import scripted_month as month
from tests.settlement.conftest import AdminStub, settlement_settings
from tests.settlement.test_settlement_service import selector
from tests.support.servers import ThreadedServer
from tests.support.tls import channel as tls_channel

OPERATOR = BillingDetails("Coalition Operator B.V.", "Dam 1\n1012 JS Amsterdam", "NL123456789B01", "NL91ABNA0417164300")


@pytest.fixture
def documents_settlement(settlement_database_url, ledger_server):
    settings = replace(settlement_settings(settlement_database_url, ledger_server.address), operator_billing=OPERATOR)
    server = ThreadedServer(lambda: start(settings))
    with tls_channel(server.address) as channel:
        yield AdminStub(channel)
    server.stop()


def _earn(ledger, transfer_id, partner, store, amount):
    (result,) = ledger.CreateTransfers(
        lpb.CreateTransfersRequest(
            transfers=[
                lpb.TransferInput(
                    id=transfer_id,
                    debit_account_id=f"issuance:PTS:{partner}",
                    credit_account_id="wallet:PTS:m1",
                    amount=amount,
                    currency_code="PTS",
                    kind=lpb.TRANSFER_KIND_POSTED,
                    code=lpb.TRANSFER_CODE_EARN,
                    metadata=lpb.TransferMetadata(partner_id=partner, store_id=store, receipt_id=transfer_id),
                )
            ]
        ),
        timeout=10,
    ).results
    assert result.status == lpb.ITEM_STATUS_CREATED, result


def _billing(billing_id, partner, effective_us, name, iban="DE89370400440532013000"):
    return spb.SetPartnerBillingDetailsRequest(
        billing_details=spb.PartnerBillingDetails(
            billing_details_id=billing_id,
            partner_id=partner,
            effective_from_time=timestamp_from_micros(effective_us),
            details=spb.BillingDetails(
                legal_name=name, address="Hauptstr. 1", vat_id="DE123456789", iban=iban, billing_email="ap@x.example"
            ),
        )
    )


def _refused(call, request):
    with pytest.raises(grpc.RpcError) as error:
        call(request)
    return error.value.code(), error_info_of(error.value).reason


def test_billing_details_are_versioned_validated_and_idempotent(documents_settlement):
    settlement = documents_settlement
    first = settlement.SetPartnerBillingDetails(_billing("fuel-b1", "fuel", 1_000_000, "Fuel GmbH"))
    assert first.created and first.billing_details.details.iban == "DE89370400440532013000"
    assert not settlement.SetPartnerBillingDetails(_billing("fuel-b1", "fuel", 1_000_000, "Fuel GmbH")).created
    assert _refused(settlement.SetPartnerBillingDetails, _billing("fuel-b1", "fuel", 1_000_000, "Other")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "ID_REUSED_WITH_DIFFERENT_CONTENT",
    )
    bad_iban = _billing("fuel-b2", "fuel", 2_000_000, "Fuel GmbH", iban="DE89370400440532013001")
    assert _refused(settlement.SetPartnerBillingDetails, bad_iban) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IBAN")
    settlement.SetPartnerBillingDetails(_billing("fuel-b2", "fuel", 2_000_000, "Fuel Renamed GmbH"))
    page = settlement.ListPartnerBillingDetails(spb.ListPartnerBillingDetailsRequest(partner_id="fuel", page_size=1))
    assert [v.billing_details_id for v in page.billing_details] == ["fuel-b1"] and page.next_page_token
    rest = settlement.ListPartnerBillingDetails(
        spb.ListPartnerBillingDetailsRequest(partner_id="fuel", page_token=page.next_page_token)
    )
    assert [v.details.legal_name for v in rest.billing_details] == ["Fuel Renamed GmbH"]


def test_closed_statements_are_numbered_gaplessly_taxed_and_post_their_gross(documents_settlement, ledger_stub):
    settlement = documents_settlement
    month.setup_ledger(ledger_stub)
    start = month.tick()
    taxed = month.agreement("retailer-v1", "retailer", start - 3_600_000_000, [("PTS", "0.0100", "0.0080")])
    taxed.payment_terms_days, taxed.tax_rate_percent, taxed.tax_note = 14, "21", "VAT 21 %"
    settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=taxed))
    fuel_terms = month.agreement("fuel-v1", "fuel", start - 3_600_000_000, [("PTS", "0.0100", "0.0080")])
    settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=fuel_terms))
    settlement.SetPartnerBillingDetails(_billing("retailer-b1", "retailer", start - 1, "Retailer AG"))
    _earn(ledger_stub, "e1", "retailer", "r-north", 1_000)
    _earn(ledger_stub, "e2", "retailer", "r-north", 250)
    _earn(ledger_stub, "e3", "retailer", "r-south", 333)
    _earn(ledger_stub, "e4", "fuel", "f-1", 100)
    end = month.tick()

    preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=selector("d1", start, end))).settlement
    retailer = next(s for s in preview.statements if s.partner_id == "retailer").document
    assert retailer.statement_number == ""  # a DRAFT has no number
    # 1,583 points x EUR 0.01 = 15.83 net; 21 % = 3.3243 -> 3.32; gross 19.15.
    assert (retailer.net_cents, retailer.tax_cents, retailer.gross_cents) == (1_583, 332, 1_915)
    assert (retailer.payment_terms_days, retailer.tax_note, retailer.agreement_id) == (14, "VAT 21 %", "retailer-v1")
    assert retailer.partner_billing.legal_name == "Retailer AG" and retailer.operator_billing.iban == OPERATOR.iban
    assert [(s.store_id, s.transaction_count, s.quantity) for s in retailer.store_lines] == [
        ("r-north", 2, 1_250),
        ("r-south", 1, 333),
    ]
    draft_pdf = settlement.ExportReport(
        spb.ExportReportRequest(period=selector("d1", start, end), format=spb.REPORT_FORMAT_HTML, partner_id="retailer")
    )
    assert b'class="watermark"' in draft_pdf.content

    closed = settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("d1", start, end))).settlement
    year = datetime.now(ZoneInfo("Europe/Amsterdam")).year
    numbers = {s.partner_id: s.document.statement_number for s in closed.statements}
    assert numbers == {"fuel": f"ST-{year}-000001", "retailer": f"ST-{year}-000002"}  # partner id order
    issued = next(s for s in closed.statements if s.partner_id == "retailer").document
    assert issued.issue_date == datetime.now(ZoneInfo("Europe/Amsterdam")).date().isoformat()
    # The ledger's SETTLEMENT transfer carries what is paid: the gross.
    posted = ledger_stub.GetTransfers(lpb.GetTransfersRequest(ids=["settlement:d1:retailer"]), timeout=10).transfers
    assert posted[0].amount == issued.gross_cents == 1_915
    # Closing again returns the stored documents: the same numbers, nothing drawn from the series.
    assert settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("d1", start, end))).settlement == closed

    _earn(ledger_stub, "e5", "fuel", "f-1", 100)
    next_end = month.tick()
    following = settlement.ClosePeriod(spb.ClosePeriodRequest(period=selector("d2", end, next_end))).settlement
    assert [s.document.statement_number for s in following.statements] == [f"ST-{year}-000003"]
    closed_html = settlement.ExportReport(
        spb.ExportReportRequest(period=selector("d1", start, end), format=spb.REPORT_FORMAT_HTML, partner_id="retailer")
    )
    assert f"ST-{year}-000002".encode() in closed_html.content and b'class="watermark"' not in closed_html.content
