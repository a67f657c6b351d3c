"""SettlementService servicer: proto in -> use case -> proto out. Every call needs the admin key."""

from __future__ import annotations

import asyncio

from coalition.settlement.v1 import settlement_pb2 as pb
from coalition.settlement.v1 import settlement_pb2_grpc
from services.common.auth import AdminKey
from services.common.errors import InvalidArgument, NotFound
from services.common.page_token import decode_page_token, encode_page_token
from services.common.timeconv import micros_from_request, timestamp_from_micros
from services.settlement import (
    agreements,
    audit,
    correcting,
    correction_wire,
    document_wire,
    outstanding,
    periods,
    reconciliation,
    reports,
    statement_documents,
    wire,
)
from services.settlement.context import SettlementContext

PAGE_SIZE_DEFAULT = 100
PAGE_SIZE_MAX = 1_000
REPORT_FORMATS = {
    pb.REPORT_FORMAT_CSV: "csv",
    pb.REPORT_FORMAT_HTML: "html",
    pb.REPORT_FORMAT_PDF: "pdf",
    pb.REPORT_FORMAT_JOURNAL_CSV: "journal-csv",
    pb.REPORT_FORMAT_BEANCOUNT: "beancount",
    pb.REPORT_FORMAT_STATEMENT_CSV: "statement-csv",
}


def page_size(requested: int) -> int:
    if requested < 0 or requested > PAGE_SIZE_MAX:
        raise InvalidArgument("INVALID_PAGE_SIZE", f"page_size must be 0..{PAGE_SIZE_MAX}")
    return requested or PAGE_SIZE_DEFAULT


def decode_periods_token(token: str) -> int | None:
    """ListPeriods' token: the end (µs) of the last period returned."""
    values = decode_page_token(token, int)
    return None if values is None else values[0]


def decode_agreements_token(token: str) -> tuple[str, int] | None:
    """ListPriceAgreements' token: [partner_id, valid_from_us] of the last version returned."""
    return decode_page_token(token, str, int)


class SettlementApi(settlement_pb2_grpc.SettlementServiceServicer):
    def __init__(self, context: SettlementContext, admin_key: AdminKey) -> None:
        self._context = context
        self._admin = admin_key

    async def SetPriceAgreement(self, request, context):
        self._admin.require(context)
        agreement, create_time_us, created = await agreements.set_price_agreement(
            self._context, wire.agreement_from_pb(request.agreement)
        )
        return pb.SetPriceAgreementResponse(agreement=wire.agreement_to_pb(agreement, create_time_us), created=created)

    async def ListPriceAgreements(self, request, context):
        self._admin.require(context)
        limit = page_size(request.page_size)
        after = decode_agreements_token(request.page_token)
        rows = await agreements.list_price_agreements(self._context, request.partner_id, after, limit + 1)
        token = (
            encode_page_token(rows[limit - 1][0].partner_id, rows[limit - 1][0].valid_from_us)
            if len(rows) > limit
            else ""
        )
        return pb.ListPriceAgreementsResponse(
            agreements=[wire.agreement_to_pb(a, t) for a, t in rows[:limit]], next_page_token=token
        )

    async def PreviewStatement(self, request, context):
        self._admin.require(context)
        preview = await periods.preview_statement(self._context, *wire.period_from_pb(request.period))
        return pb.PreviewStatementResponse(
            settlement=wire.settlement_to_pb(preview.settlement),
            warnings=[wire.warning_to_pb(w) for w in preview.warnings],
        )

    async def ClosePeriod(self, request, context):
        self._admin.require(context)
        settlement, closed_now = await periods.close_period(
            self._context, *wire.period_from_pb(request.period), validate_only=request.validate_only
        )
        warnings = await periods.close_warnings(self._context, settlement)
        return pb.ClosePeriodResponse(
            settlement=wire.settlement_to_pb(settlement),
            closed_now=closed_now,
            warnings=[wire.warning_to_pb(w) for w in warnings],
        )

    async def GetPeriod(self, request, context):
        self._admin.require(context)
        settlement = await periods.get_period(self._context, request.period_id)
        return pb.GetPeriodResponse(settlement=wire.settlement_to_pb(settlement))

    async def ListPeriods(self, request, context):
        self._admin.require(context)
        limit = page_size(request.page_size)
        before = decode_periods_token(request.page_token)
        rows = await periods.list_periods(self._context, before, limit + 1)
        token = encode_page_token(rows[limit - 1][0].end_us) if len(rows) > limit else ""
        return pb.ListPeriodsResponse(
            periods=[
                pb.PeriodSummary(
                    period_id=row.period_id,
                    start_time=timestamp_from_micros(row.start_us),
                    end_time=timestamp_from_micros(row.end_us),
                    operator_net_cents=net,
                    close_time=timestamp_from_micros(row.close_time_us),
                )
                for row, net in rows[:limit]
            ],
            next_page_token=token,
        )

    async def Reconcile(self, request, context):
        self._admin.require(context)
        row, result, created = await reconciliation.reconcile(
            self._context,
            request.reconciliation_id,
            request.partner_id,
            *wire.period_from_pb(request.period),
            request.file_csv,
        )
        reviews = await correcting.reviews_of(self._context, row.reconciliation_id)
        return pb.ReconcileResponse(reconciliation=wire.reconciliation_to_pb(row, result, reviews), created=created)

    async def GetReconciliation(self, request, context):
        self._admin.require(context)
        row, result = await reconciliation.get_reconciliation(self._context, request.reconciliation_id)
        reviews = await correcting.reviews_of(self._context, row.reconciliation_id)
        return pb.GetReconciliationResponse(reconciliation=wire.reconciliation_to_pb(row, result, reviews))

    async def Audit(self, request, context):
        self._admin.require(context)
        report = await audit.audit(self._context)
        return pb.AuditResponse(
            findings=[
                pb.AuditFinding(invariant=f.invariant, currency_code=f.currency_code, message=f.message)
                for f in report.findings
            ],
            roll_forwards=[wire.roll_forward_to_pb(rf) for rf in report.roll_forwards],
            wallet_totals=[
                pb.CurrencyAmount(currency_code=code, amount=amount)
                for code, amount in sorted(report.wallet_totals.items())
            ],
            commit_sequence=report.commit_sequence,
        )

    async def ExportReport(self, request, context):
        self._admin.require(context)
        fmt = REPORT_FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument(
                "INVALID_FORMAT",
                "format must be REPORT_FORMAT_CSV, _HTML, _PDF, _JOURNAL_CSV, _BEANCOUNT or _STATEMENT_CSV",
            )
        preview = await periods.preview_statement(self._context, *wire.period_from_pb(request.period))
        settlement = preview.settlement
        if request.partner_id and settlement.statement(request.partner_id) is None:
            raise NotFound(
                "PARTNER_NOT_IN_PERIOD",
                f"partner {request.partner_id} has no statement for {settlement.period_id}",
            )
        document = await asyncio.to_thread(
            reports.render, settlement, fmt, request.partner_id, self._context.time_zone, preview.warnings
        )
        return pb.ExportReportResponse(
            content=document.content,
            media_type=document.media_type,
            file_name=document.file_name,
            warnings=[wire.warning_to_pb(w) for w in preview.warnings],
        )

    async def GetOutstandingReport(self, request, context):
        self._admin.require(context)
        as_of_us = micros_from_request(request.as_of_time, "as_of_time") if request.HasField("as_of_time") else None
        summary = await outstanding.outstanding_report(self._context, as_of_us, request.currency_code)
        return wire.outstanding_report_to_pb(summary)

    async def SetPartnerBillingDetails(self, request, context):
        self._admin.require(context)
        version, create_time_us, created = await statement_documents.set_partner_billing_details(
            self._context, document_wire.billing_version_from_pb(request.billing_details)
        )
        return pb.SetPartnerBillingDetailsResponse(
            billing_details=document_wire.billing_version_to_pb(version, create_time_us), created=created
        )

    async def ListPartnerBillingDetails(self, request, context):
        self._admin.require(context)
        limit = page_size(request.page_size)
        after = decode_agreements_token(request.page_token)  # the same shape: [partner_id, start µs]
        rows = await statement_documents.list_partner_billing_details(
            self._context, request.partner_id, after, limit + 1
        )
        last = rows[limit - 1][0] if len(rows) > limit else None
        return pb.ListPartnerBillingDetailsResponse(
            billing_details=[document_wire.billing_version_to_pb(v, t) for v, t in rows[:limit]],
            next_page_token=encode_page_token(last.partner_id, last.effective_from_us) if last is not None else "",
        )

    async def PostAdjustment(self, request, context):
        self._admin.require(context)
        adjustment, created = await correcting.post_adjustment(
            self._context, correction_wire.adjustment_from_pb(request.adjustment)
        )
        return pb.PostAdjustmentResponse(adjustment=correction_wire.adjustment_to_pb(adjustment), created=created)

    async def SetReconciliationRowStatus(self, request, context):
        self._admin.require(context)
        answer = await correcting.set_row_status(
            self._context,
            request.change_id,
            request.reconciliation_id,
            request.row_number,
            correction_wire.review_status_from_pb(request.status),
            request.note,
        )
        return correction_wire.row_status_response(*answer)

    async def ListOpenItems(self, request, context):
        self._admin.require(context)
        limit = page_size(request.page_size)
        after = decode_page_token(request.page_token, str, int, str, int)
        items = await correcting.list_open_items(self._context, request.partner_id, after, limit + 1)
        token = encode_page_token(*items[limit - 1][0]) if len(items) > limit else ""
        return pb.ListOpenItemsResponse(
            items=[correction_wire.open_item_to_pb(*item) for item in items[:limit]], next_page_token=token
        )
