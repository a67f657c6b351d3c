"""Proto mapping of statements as documents and billing details (settlement.proto); nothing else."""

from __future__ import annotations

from coalition.settlement.v1 import settlement_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.timeconv import micros_from_request, timestamp_from_micros
from services.settlement.documents import BillingDetails, BillingVersion, StatementDocument
from services.settlement.model import PeriodSettlement


def billing_from_pb(message: pb.BillingDetails) -> BillingDetails:
    return BillingDetails(
        legal_name=message.legal_name,
        address=message.address,
        vat_id=message.vat_id,
        iban=message.iban,
        billing_email=message.billing_email,
    )


def billing_to_pb(details: BillingDetails) -> pb.BillingDetails:
    return pb.BillingDetails(
        legal_name=details.legal_name,
        address=details.address,
        vat_id=details.vat_id,
        iban=details.iban,
        billing_email=details.billing_email,
    )


def billing_version_from_pb(message: pb.PartnerBillingDetails) -> BillingVersion:
    if not message.HasField("effective_from_time"):
        raise InvalidArgument(
            "INVALID_BILLING_DETAILS", "effective_from_time is required", field="billing_details.effective_from_time"
        )
    return BillingVersion(
        billing_details_id=message.billing_details_id,
        partner_id=message.partner_id,
        effective_from_us=micros_from_request(message.effective_from_time, "billing_details.effective_from_time"),
        details=billing_from_pb(message.details),
    )


def billing_version_to_pb(version: BillingVersion, create_time_us: int) -> pb.PartnerBillingDetails:
    return pb.PartnerBillingDetails(
        billing_details_id=version.billing_details_id,
        partner_id=version.partner_id,
        effective_from_time=timestamp_from_micros(version.effective_from_us),
        details=billing_to_pb(version.details),
        create_time=timestamp_from_micros(create_time_us),
    )


def document_to_pb(document: StatementDocument) -> pb.StatementDocument:
    message = pb.StatementDocument(
        statement_number=document.statement_number,
        issue_date=document.issue_date.isoformat(),
        due_date=document.due_date.isoformat(),
        payment_terms_days=document.payment_terms_days,
        tax_rate_percent=str(document.tax_rate_percent),
        tax_note=document.tax_note,
        net_cents=document.net_cents,
        tax_cents=document.tax_cents,
        gross_cents=document.gross_cents,
        agreement_id=document.agreement_id,
        store_lines=[
            pb.StoreLine(
                store_id=line.store_id,
                kind=getattr(pb, f"STATEMENT_LINE_KIND_{line.kind.value}"),
                currency_code=line.currency_code,
                transaction_count=line.transaction_count,
                quantity=line.quantity,
            )
            for line in document.store_lines
        ],
    )
    if document.partner_billing is not None:
        message.partner_billing.CopyFrom(billing_to_pb(document.partner_billing))
    if document.operator_billing is not None:
        message.operator_billing.CopyFrom(billing_to_pb(document.operator_billing))
    return message


def attach_documents(message: pb.PeriodSettlement, settlement: PeriodSettlement) -> None:
    """Fill each Statement.document of a mapped PeriodSettlement (statements are in the same order)."""
    for statement in message.statements:
        document = settlement.document(statement.partner_id)
        if document is not None:
            statement.document.CopyFrom(document_to_pb(document))
