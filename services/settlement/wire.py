"""Translation between settlement.proto messages and the domain; nothing else."""

from __future__ import annotations

from coalition.ledger.v1 import ledger_pb2
from coalition.settlement.v1 import settlement_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.timeconv import micros_from_request, timestamp_from_micros
from services.settlement.corrections import initial_review_status
from services.settlement.document_wire import attach_documents
from services.settlement.documents import PAYMENT_TERMS_DAYS_DEFAULT, parse_tax_rate, validate_terms
from services.settlement.model import (
    BreakageOwner,
    ConversionPrice,
    MatchStatus,
    PeriodSettlement,
    PointPrice,
    PriceAgreement,
    ReconciliationResult,
    RollForward,
    SettlementRuleError,
    Statement,
    TierBonusFunder,
    parse_price,
)
from services.settlement.scheme import PeriodWarning

_MATCH_STATUS = {status: getattr(pb, f"MATCH_STATUS_{status.value}") for status in MatchStatus}
_BREAKAGE_OWNERS = {owner: getattr(pb, f"BREAKAGE_OWNER_{owner.value}") for owner in BreakageOwner}
_BREAKAGE_OWNER_OF = {value: owner for owner, value in _BREAKAGE_OWNERS.items()}
_TIER_BONUS_FUNDERS = {funder: getattr(pb, f"TIER_BONUS_FUNDER_{funder.value}") for funder in TierBonusFunder}
_TIER_BONUS_FUNDER_OF = {value: funder for funder, value in _TIER_BONUS_FUNDERS.items()}


def breakage_owner_from_pb(value: int) -> BreakageOwner:
    """UNSPECIFIED means the operator; a number this version does not know is refused."""
    if value == pb.BREAKAGE_OWNER_UNSPECIFIED:
        return BreakageOwner.OPERATOR
    owner = _BREAKAGE_OWNER_OF.get(value)
    if owner is None:
        raise InvalidArgument(
            "INVALID_BREAKAGE_OWNER",
            "breakage_owner must be BREAKAGE_OWNER_OPERATOR or BREAKAGE_OWNER_ISSUING_PARTNER",
            field="agreement.breakage_owner",
        )
    return owner


def tier_bonus_funder_from_pb(value: int) -> TierBonusFunder:
    """UNSPECIFIED means the partner; a number this version does not know is refused."""
    if value == pb.TIER_BONUS_FUNDER_UNSPECIFIED:
        return TierBonusFunder.PARTNER
    funder = _TIER_BONUS_FUNDER_OF.get(value)
    if funder is None:
        raise InvalidArgument(
            "INVALID_TIER_BONUS_FUNDER",
            "tier_bonus_funder must be TIER_BONUS_FUNDER_PARTNER or TIER_BONUS_FUNDER_OPERATOR",
            field="agreement.tier_bonus_funder",
            value=value,
        )
    return funder


def _price(text: str, field: str):
    try:
        return parse_price(text, field)
    except SettlementRuleError as error:
        raise InvalidArgument(error.reason, error.message, field=field) from error


def agreement_from_pb(message: pb.PriceAgreement) -> PriceAgreement:
    if not message.HasField("valid_from_time"):
        raise InvalidArgument("INVALID_AGREEMENT", "valid_from_time is required")
    return PriceAgreement(
        agreement_id=message.agreement_id,
        partner_id=message.partner_id,
        valid_from_us=micros_from_request(message.valid_from_time, "agreement.valid_from_time"),
        point_prices=tuple(
            PointPrice(
                p.currency_code,
                _price(p.issue_price_per_point, "issue_price_per_point"),
                _price(p.reimbursement_price_per_point, "reimbursement_price_per_point"),
            )
            for p in message.point_prices
        ),
        conversion_prices=tuple(
            ConversionPrice(
                p.from_currency_code,
                p.to_currency_code,
                _price(p.price_per_unit_received, "price_per_unit_received"),
            )
            for p in message.conversion_prices
        ),
        breakage_owner=breakage_owner_from_pb(message.breakage_owner),
        tier_bonus_funder=tier_bonus_funder_from_pb(message.tier_bonus_funder),
        **_terms_from_pb(message),
    )


def _terms_from_pb(message: pb.PriceAgreement) -> dict:
    """Payment terms and tax (0 days: the default); refused as INVALID_ARGUMENT when malformed."""
    try:
        validate_terms(message.payment_terms_days, message.tax_note)
        rate = parse_tax_rate(message.tax_rate_percent)
    except SettlementRuleError as error:
        raise InvalidArgument(error.reason, error.message) from error
    return {
        "payment_terms_days": message.payment_terms_days or PAYMENT_TERMS_DAYS_DEFAULT,
        "tax_rate_percent": rate,
        "tax_note": message.tax_note,
    }


def agreement_to_pb(agreement: PriceAgreement, create_time_us: int) -> pb.PriceAgreement:
    return pb.PriceAgreement(
        agreement_id=agreement.agreement_id,
        partner_id=agreement.partner_id,
        valid_from_time=timestamp_from_micros(agreement.valid_from_us),
        point_prices=[
            pb.PointPrice(
                currency_code=p.currency_code,
                issue_price_per_point=str(p.issue_price),
                reimbursement_price_per_point=str(p.reimbursement_price),
            )
            for p in agreement.point_prices
        ],
        conversion_prices=[
            pb.ConversionPrice(
                from_currency_code=p.from_currency_code,
                to_currency_code=p.to_currency_code,
                price_per_unit_received=str(p.price_per_unit_received),
            )
            for p in agreement.conversion_prices
        ],
        create_time=timestamp_from_micros(create_time_us),
        breakage_owner=_BREAKAGE_OWNERS[agreement.breakage_owner],
        tier_bonus_funder=_TIER_BONUS_FUNDERS[agreement.tier_bonus_funder],
        payment_terms_days=agreement.payment_terms_days,
        tax_rate_percent=str(agreement.tax_rate_percent),
        tax_note=agreement.tax_note,
    )


def period_from_pb(selector: pb.PeriodSelector) -> tuple[str, int | None, int | None]:
    start = micros_from_request(selector.start_time, "period.start_time") if selector.HasField("start_time") else None
    end = micros_from_request(selector.end_time, "period.end_time") if selector.HasField("end_time") else None
    return selector.period_id, start, end


def statement_to_pb(statement: Statement) -> pb.Statement:
    return pb.Statement(
        partner_id=statement.partner_id,
        lines=[
            pb.StatementLine(
                kind=getattr(pb, f"STATEMENT_LINE_KIND_{line.kind.value}"),
                currency_code=line.currency_code,
                counterparty_currency_code=line.counterparty_currency_code,
                counterparty_id=line.counterparty_id,
                quantity=line.quantity,
                unit_price=str(line.unit_price),
                amount_cents=line.amount_cents,
                agreement_id=line.agreement_id,
                prior_period_adjustment=line.prior_period_adjustment,
                expired_quantity=line.expired_quantity,
                reinstated_quantity=line.reinstated_quantity,
                breakage_owner=_BREAKAGE_OWNERS[line.breakage_owner] if line.breakage_owner is not None else 0,
                tier_bonus_issued_quantity=line.tier_bonus_issued_quantity,
                tier_bonus_reversed_quantity=line.tier_bonus_reversed_quantity,
                tier_bonus_funder=(
                    _TIER_BONUS_FUNDERS[line.tier_bonus_funder] if line.tier_bonus_funder is not None else 0
                ),
                original_period_id=line.original_period_id,
                adjustment_id=line.adjustment_id,
                adjustment_reason=line.adjustment_reason,
            )
            for line in statement.lines
        ],
        partner_pays_cents=statement.partner_pays_cents,
        partner_is_paid_cents=statement.partner_is_paid_cents,
        net_cents=statement.net_cents,
        settlement_transfer_id=statement.settlement_transfer_id,
    )


def roll_forward_to_pb(rf: RollForward) -> pb.RollForward:
    return pb.RollForward(
        currency_code=rf.currency_code,
        opening_outstanding=rf.opening_outstanding,
        issued=rf.issued,
        earn_reversed=rf.earn_reversed,
        redeemed=rf.redeemed,
        redemption_reversed=rf.redemption_reversed,
        expired=rf.expired,
        reinstated=rf.reinstated,
        converted_in=rf.converted_in,
        converted_out=rf.converted_out,
        other_adjustments=rf.other_adjustments,
        closing_outstanding=rf.closing_outstanding,
    )


def settlement_to_pb(settlement: PeriodSettlement) -> pb.PeriodSettlement:
    netting = settlement.netting
    message = pb.PeriodSettlement(
        period_id=settlement.period_id,
        start_time=timestamp_from_micros(settlement.start_us),
        end_time=timestamp_from_micros(settlement.end_us),
        state=pb.PERIOD_STATE_CLOSED if settlement.closed else pb.PERIOD_STATE_OPEN,
        statements=[statement_to_pb(s) for s in settlement.statements],
        netting=pb.NettingOverview(
            operator_net_cents=netting.operator_net_cents,
            operator_net_from_lines_cents=netting.operator_net_from_lines_cents,
            balanced=netting.balanced,
        ),
        roll_forwards=[roll_forward_to_pb(rf) for rf in settlement.roll_forwards],
        last_commit_sequence=settlement.last_commit_sequence,
    )
    if settlement.closed:
        message.close_time.CopyFrom(timestamp_from_micros(settlement.close_time_us))
    attach_documents(message, settlement)
    return message


def reconciliation_to_pb(row, result: ReconciliationResult, reviews: dict | None = None) -> pb.Reconciliation:
    """`reviews`: row number -> (ReviewStatus, note) of the rows reviewed (correction_store.reviews_of)."""
    counts = result.counts
    reviews = reviews or {}
    return pb.Reconciliation(
        reconciliation_id=row.reconciliation_id,
        partner_id=row.partner_id,
        period_id=row.period_id,
        counts=pb.ReconciliationCounts(
            matched=counts[MatchStatus.MATCHED],
            missing_in_ledger=counts[MatchStatus.MISSING_IN_LEDGER],
            missing_at_partner=counts[MatchStatus.MISSING_AT_PARTNER],
            amount_differs=counts[MatchStatus.AMOUNT_DIFFERS],
            duplicate=counts[MatchStatus.DUPLICATE],
            store_differs=counts[MatchStatus.STORE_DIFFERS],
            terminal_differs=counts[MatchStatus.TERMINAL_DIFFERS],
            outside_period=counts[MatchStatus.OUTSIDE_PERIOD],
        ),
        rows=[
            reconciliation_row_to_pb(r, number, *reviews.get(number, (None, "")))
            for number, r in enumerate(result.rows, start=1)
        ],
        create_time=timestamp_from_micros(row.create_time_us),
    )


def reconciliation_row_to_pb(r, number: int, review_status, review_note: str) -> pb.ReconciliationRow:
    """A stored row; a row never reviewed shows the status it starts with."""
    status = review_status or initial_review_status(r.status)
    return pb.ReconciliationRow(
        status=_MATCH_STATUS[r.status],
        file_line_number=r.line_number,
        receipt_id=r.receipt_id,
        store_id=r.store_id,
        terminal_id=r.terminal_id,
        type=r.type,
        partner_points=r.partner_points,
        ledger_points=r.ledger_points,
        time=r.time,
        currency_code=r.currency_code,
        review_status=getattr(pb, f"REVIEW_STATUS_{status.value}"),
        review_note=review_note,
        row_number=number,
    )


_EXPIRY_KINDS = {
    ledger_pb2.EXPIRY_BUCKET_KIND_MONTH: pb.OUTSTANDING_EXPIRY_KIND_MONTH,
    ledger_pb2.EXPIRY_BUCKET_KIND_NEVER: pb.OUTSTANDING_EXPIRY_KIND_NEVER,
    ledger_pb2.EXPIRY_BUCKET_KIND_EXEMPT: pb.OUTSTANDING_EXPIRY_KIND_EXEMPT,
}


def outstanding_report_to_pb(summary: ledger_pb2.GetOutstandingSummaryResponse) -> pb.GetOutstandingReportResponse:
    """The ledger's summary as finance reads it, with the check that the lots add up to the wallets."""
    return pb.GetOutstandingReportResponse(
        as_of_time=summary.as_of_time,
        commit_sequence=summary.commit_sequence,
        currencies=[
            pb.OutstandingCurrency(
                currency_code=c.currency_code,
                open_lots_total=c.open_lots_total,
                wallet_balance_total=c.wallet_balance_total,
                balanced=c.open_lots_total == c.wallet_balance_total,
                age_buckets=[
                    pb.OutstandingAgeBucket(
                        age_months_min=b.age_months_min, age_months_max=b.age_months_max, amount=b.amount
                    )
                    for b in c.age_buckets
                ],
                expiry_rows=[
                    pb.OutstandingExpiryRow(
                        kind=_EXPIRY_KINDS.get(b.kind, pb.OUTSTANDING_EXPIRY_KIND_UNSPECIFIED),
                        month=b.month,
                        amount=b.amount,
                        inactivity_amount=b.inactivity_amount,
                    )
                    for b in c.expiry_buckets
                ],
            )
            for c in summary.currencies
        ],
    )


def warning_to_pb(warning: PeriodWarning) -> pb.PeriodWarning:
    message = pb.PeriodWarning(
        kind=getattr(pb, f"PERIOD_WARNING_KIND_{warning.kind.value}"),
        message=warning.message,
        partner_id=warning.partner_id,
        currency_code=warning.currency_code,
        period_id=warning.period_id,
    )
    if warning.start_us:
        message.start_time.CopyFrom(timestamp_from_micros(warning.start_us))
    if warning.end_us:
        message.end_time.CopyFrom(timestamp_from_micros(warning.end_us))
    return message
