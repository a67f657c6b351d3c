"""Translation between partners.proto messages and the domain or use-case commands; nothing else.

The only module that knows both shapes, so the servicer stays a list of calls and a proto change
touches one file. Field checks that exist only because of the wire shape (an unset enum, a missing
oneof, an absent timestamp) live here too, with the same reasons the handlers always gave.
"""

from __future__ import annotations

from decimal import Decimal

from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from services.partners import converting, earn_pricing, earning, members, model, partners_admin, redemptions, returns

_KINDS = {
    pb.PARTNER_KIND_RETAILER: "retailer",
    pb.PARTNER_KIND_FUEL: "fuel",
    pb.PARTNER_KIND_HOTEL: "hotel",
    pb.PARTNER_KIND_AIRLINE: "airline",
}
_KIND_ENUMS = {value: key for key, value in _KINDS.items()}
_ALIAS_KINDS = {pb.ALIAS_KIND_CARD: "card", pb.ALIAS_KIND_PHONE: "phone", pb.ALIAS_KIND_EMAIL: "email"}
_BASES = {pb.EARN_BASIS_AMOUNT: earn_pricing.BASIS_AMOUNT, pb.EARN_BASIS_QUANTITY: earn_pricing.BASIS_QUANTITY}
_BASIS_ENUMS = {value: key for key, value in _BASES.items()}
_PROMOTIONS = {
    pb.PROMOTION_KIND_MULTIPLIER: earn_pricing.PROMOTION_MULTIPLIER,
    pb.PROMOTION_KIND_FIXED_BONUS: earn_pricing.PROMOTION_FIXED_BONUS,
}
_PROMOTION_ENUMS = {value: key for key, value in _PROMOTIONS.items()}
_REDEMPTION_STATES = {
    "authorized": pb.REDEMPTION_STATE_AUTHORIZED,
    "captured": pb.REDEMPTION_STATE_CAPTURED,
    "voided": pb.REDEMPTION_STATE_VOIDED,
    "expired": pb.REDEMPTION_STATE_EXPIRED,
}
_ACTIVITY = {
    "earn": pb.ACTIVITY_KIND_EARN,
    "redeem": pb.ACTIVITY_KIND_REDEEM,
    "reversal": pb.ACTIVITY_KIND_REVERSAL,
    "conversion": pb.ACTIVITY_KIND_CONVERSION,
    "expiry": pb.ACTIVITY_KIND_EXPIRY,
    "adjustment": pb.ACTIVITY_KIND_ADJUSTMENT,
}


# ---- proto -> domain ----
def new_partner(message: pb.Partner) -> partners_admin.NewPartner:
    # An unknown kind maps to "" so the use case refuses it with its own reason.
    return partners_admin.NewPartner(
        message.partner_id, _KINDS.get(message.kind, ""), message.display_name, message.programme_currency_code
    )


def alias(message: pb.Alias) -> members.AliasInput:
    kind = _ALIAS_KINDS.get(message.kind)
    if kind is None:
        raise InvalidArgument("INVALID_ALIAS", "alias.kind must be CARD, PHONE or EMAIL", field="alias.kind")
    return members.AliasInput(kind, message.value)


def member_ref(message: pb.MemberIdentity) -> members.MemberRef:
    which = message.WhichOneof("identity")
    if which == "alias":
        return members.MemberRef(alias=alias(message.alias))
    if which == "member_id":
        return members.MemberRef(member_id=message.member_id)
    raise InvalidArgument("MEMBER_REQUIRED", "name the member by member_id or alias", field="member")


def basket_lines(messages) -> list[earn_pricing.BasketLine]:
    return [
        earn_pricing.BasketLine(line.line_number, line.sku, line.category, line.quantity, line.amount)
        for line in messages
    ]


def optional_time(message, field: str) -> int | None:
    return micros_from_timestamp(getattr(message, field)) if message.HasField(field) else None


def earn_rule(message: pb.EarnRule) -> earn_pricing.EarnRule:
    promotion = None
    if message.HasField("promotion") and message.promotion.kind != pb.PROMOTION_KIND_UNSPECIFIED:
        source = message.promotion
        kind = _PROMOTIONS.get(source.kind, "")
        promotion = earn_pricing.Promotion(
            kind=kind,
            start_micros=micros_from_timestamp(source.start_time),
            end_micros=micros_from_timestamp(source.end_time),
            multiplier=model.parse_decimal(
                source.multiplier or "1", "promotion.multiplier", minimum=Decimal(0), maximum=model.MULTIPLIER_MAX
            ),
            bonus_points=source.bonus_points,
            threshold_amount=source.threshold_amount,
        )
    return earn_pricing.EarnRule(
        partner_id=message.partner_id,
        version=0,
        currency_code=message.currency_code,
        basis=_BASES.get(message.basis, ""),
        base_rate=model.parse_decimal(message.base_rate, "base_rate", minimum=Decimal(0), maximum=model.BASE_RATE_MAX),
        category_multipliers={
            item.category: model.parse_decimal(
                item.multiplier, "category_multipliers", minimum=Decimal(0), maximum=model.MULTIPLIER_MAX
            )
            for item in message.category_multipliers
        },
        excluded_categories=frozenset(message.excluded_categories),
        promotion=promotion,
        cap_points=message.cap_points_per_transaction,
        valid_from_micros=micros_from_timestamp(message.valid_from_time),
        valid_to_micros=optional_time(message, "valid_to_time"),
    )


def conversion_rule(message: pb.ConversionRule) -> converting.ConversionRule:
    return converting.ConversionRule(
        from_currency=message.from_currency_code,
        to_currency=message.to_currency_code,
        version=0,
        from_units=message.from_units,
        to_units=message.to_units,
        bonus_block_from_amount=message.bonus_block_from_amount,
        bonus_to_amount=message.bonus_to_amount,
        min_from_amount=message.min_from_amount,
        step_from_amount=message.step_from_amount,
        max_from_amount=message.max_from_amount,
        annual_cap_from_amount=message.annual_cap_from_amount,
        valid_from_micros=micros_from_timestamp(message.valid_from_time),
        valid_to_micros=optional_time(message, "valid_to_time"),
    )


def earn_command(message: pb.EarnRequest, occur_time_us: int | None = None) -> earning.EarnCommand:
    return earning.EarnCommand(
        request_id=message.request_id,
        store_id=message.point_of_sale.store_id,
        terminal_id=message.point_of_sale.terminal_id,
        receipt_id=message.receipt_id,
        member=member_ref(message.member),
        lines=basket_lines(message.lines),
        occur_time_us=occur_time_us,
    )


def offline_earn_command(message: pb.OfflineEarn) -> earning.EarnCommand:
    # An offline earn is priced with the rule in effect when it happened, so the till's time is required.
    if not message.HasField("occur_time"):
        raise InvalidArgument("OCCUR_TIME_REQUIRED", "every offline earn needs occur_time")
    return earn_command(message.earn, micros_from_timestamp(message.occur_time))


def authorize_command(message: pb.AuthorizeRedemptionRequest) -> redemptions.AuthorizeCommand:
    return redemptions.AuthorizeCommand(
        request_id=message.request_id,
        store_id=message.point_of_sale.store_id,
        terminal_id=message.point_of_sale.terminal_id,
        receipt_id=message.receipt_id,
        member=member_ref(message.member),
        currency_code=message.currency_code,
        amount=message.amount,
        hold_timeout_seconds=message.hold_timeout_seconds,
    )


def return_command(message: pb.ReturnRequest) -> returns.ReturnCommand:
    return returns.ReturnCommand(
        request_id=message.request_id,
        store_id=message.point_of_sale.store_id,
        terminal_id=message.point_of_sale.terminal_id,
        receipt_id=message.receipt_id,
        line_numbers=list(message.line_numbers),
        redeemed_refund_amount=message.redeemed_refund_amount,
    )


# ---- domain -> proto ----
def partner_message(row) -> pb.Partner:
    return pb.Partner(
        partner_id=row.partner_id,
        kind=_KIND_ENUMS[row.kind],
        display_name=row.display_name,
        programme_currency_code=row.programme_currency_code or "",
        status=pb.PARTNER_STATUS_ACTIVE if row.status == "active" else pb.PARTNER_STATUS_SUSPENDED,
        create_time=timestamp_from_micros(row.create_time_us),
    )


def store_message(row) -> pb.Store:
    return pb.Store(store_id=row.store_id, partner_id=row.partner_id, display_name=row.display_name)


def terminal_message(row) -> pb.Terminal:
    return pb.Terminal(store_id=row.store_id, terminal_id=row.terminal_id)


def key_info_message(row) -> pb.ApiKeyInfo:
    info = pb.ApiKeyInfo(
        key_id=row.key_id,
        partner_id=row.partner_id,
        create_time=timestamp_from_micros(row.create_time_us),
        key_hint=row.key_hint,
        replaced_by_key_id=row.replaced_by_key_id or "",
    )
    if row.revoke_time_us is not None:
        info.revoke_time.CopyFrom(timestamp_from_micros(row.revoke_time_us))
    return info


def earn_rule_message(rule: earn_pricing.EarnRule) -> pb.EarnRule:
    message = pb.EarnRule(
        partner_id=rule.partner_id,
        version=rule.version,
        currency_code=rule.currency_code,
        basis=_BASIS_ENUMS[rule.basis],
        base_rate=str(rule.base_rate),
        category_multipliers=[
            pb.CategoryMultiplier(category=key, multiplier=str(value))
            for key, value in sorted(rule.category_multipliers.items())
        ],
        excluded_categories=sorted(rule.excluded_categories),
        cap_points_per_transaction=rule.cap_points,
        valid_from_time=timestamp_from_micros(rule.valid_from_micros),
    )
    if rule.valid_to_micros is not None:
        message.valid_to_time.CopyFrom(timestamp_from_micros(rule.valid_to_micros))
    if rule.promotion is not None:
        promotion = rule.promotion
        message.promotion.CopyFrom(
            pb.Promotion(
                kind=_PROMOTION_ENUMS[promotion.kind],
                multiplier=str(promotion.multiplier),
                bonus_points=promotion.bonus_points,
                threshold_amount=promotion.threshold_amount,
                start_time=timestamp_from_micros(promotion.start_micros),
                end_time=timestamp_from_micros(promotion.end_micros),
            )
        )
    return message


def conversion_rule_message(rule: converting.ConversionRule) -> pb.ConversionRule:
    message = pb.ConversionRule(
        from_currency_code=rule.from_currency,
        to_currency_code=rule.to_currency,
        version=rule.version,
        from_units=rule.from_units,
        to_units=rule.to_units,
        bonus_block_from_amount=rule.bonus_block_from_amount,
        bonus_to_amount=rule.bonus_to_amount,
        min_from_amount=rule.min_from_amount,
        step_from_amount=rule.step_from_amount,
        max_from_amount=rule.max_from_amount,
        annual_cap_from_amount=rule.annual_cap_from_amount,
        valid_from_time=timestamp_from_micros(rule.valid_from_micros),
    )
    if rule.valid_to_micros is not None:
        message.valid_to_time.CopyFrom(timestamp_from_micros(rule.valid_to_micros))
    return message


def member_message(row, alias_count: int) -> pb.Member:
    return pb.Member(
        member_id=row.member_id, create_time=timestamp_from_micros(row.create_time_us), alias_count=alias_count
    )


def wallet_balance_message(item) -> pb.WalletBalance:
    return pb.WalletBalance(
        currency_code=item.currency_code, posted=item.posted, pending=item.pending, available=item.available
    )


def activity_item_message(item) -> pb.ActivityItem:
    return pb.ActivityItem(
        commit_time=timestamp_from_micros(item.commit_time_us),
        kind=_ACTIVITY.get(item.kind, pb.ACTIVITY_KIND_UNSPECIFIED),
        currency_code=item.currency_code,
        posted_change=item.posted_change,
        pending_change=item.pending_change,
        partner_id=item.partner_id,
        store_id=item.store_id,
        receipt_id=item.receipt_id,
    )


def pricing_message(pricing: earn_pricing.EarnPricing) -> pb.EarnPricing:
    return pb.EarnPricing(
        currency_code=pricing.currency_code,
        points=pricing.points,
        exact_points=str(pricing.exact_points),
        bonus_points=pricing.bonus_points,
        promotion_applied=pricing.promotion_applied,
        capped=pricing.capped,
        rule_version=pricing.rule_version,
        lines=[
            pb.LinePoints(
                line_number=line.line_number,
                points=line.points,
                exact_points=str(line.exact_points),
                excluded=line.excluded,
                tier_bonus_points=line.tier_bonus_points,
            )
            for line in pricing.lines
        ],
        tier_name=pricing.tier.name,
        tier_multiplier=str(pricing.tier.multiplier),
        tier_bonus_points=pricing.tier_bonus_points,
    )


def earn_response(record: earning.EarnRecord) -> pb.EarnResponse:
    row = record.earn
    return pb.EarnResponse(
        earn_id=row.earn_id,
        member_id=row.member_id,
        pricing=pb.EarnPricing(
            currency_code=row.currency_code,
            points=row.points,
            exact_points=row.exact_points,
            bonus_points=row.bonus_points,
            promotion_applied=row.promotion_applied,
            capped=row.capped,
            rule_version=row.rule_version,
            lines=[
                pb.LinePoints(
                    line_number=line.line_number,
                    points=line.points,
                    exact_points=line.exact_points,
                    excluded=line.excluded,
                    returned=line.return_id is not None,
                    tier_bonus_points=line.tier_bonus_points,
                )
                for line in record.lines
            ],
            tier_name=row.tier_name,
            tier_multiplier=row.tier_multiplier,
            tier_bonus_points=row.tier_bonus_points,
        ),
    )


def offline_batch_response(results) -> pb.UploadOfflineBatchResponse:
    response = pb.UploadOfflineBatchResponse()
    for index, result in enumerate(results):
        item = response.results.add(index=index, request_id=result.request_id)
        if result.record is not None:
            item.earn.CopyFrom(earn_response(result.record))
            response.succeeded_count += 1
        else:
            item.error_reason, item.error_message = result.error.reason, result.error.message
            response.failed_count += 1
    return response


def redemption_message(row) -> pb.Redemption:
    return pb.Redemption(
        redemption_id=row.redemption_id,
        member_id=row.member_id,
        currency_code=row.currency_code,
        held_amount=row.held_amount,
        captured_amount=row.captured_amount,
        refunded_amount=row.refunded_amount,
        state=_REDEMPTION_STATES.get(row.state, pb.REDEMPTION_STATE_UNSPECIFIED),
        expire_time=timestamp_from_micros(row.expire_time_us),
        receipt_id=row.receipt_id,
    )


def return_response(row) -> pb.ReturnResponse:
    # Per currency: the refund in refund_currency_code (the first refunded currency).
    refunded = returns.refund_totals(row).get(row.refund_currency_code, 0)
    return pb.ReturnResponse(
        return_id=row.return_id,
        member_id=row.member_id,
        currency_code=row.currency_code,
        earned_points_due=row.earned_points_due,
        earned_points_reversed=row.earned_points_reversed,
        shortfall_points=row.earned_points_due - row.earned_points_reversed,
        redeemed_points_refunded=refunded,
        refund_currency_code=row.refund_currency_code,
        tier_bonus_points_due=row.tier_bonus_points_due,
    )


def quote_message(row) -> pb.ConversionQuote:
    return pb.ConversionQuote(
        quote_id=row.quote_id,
        member_id=row.member_id,
        from_currency_code=row.from_currency,
        to_currency_code=row.to_currency,
        from_amount=row.from_amount,
        to_amount=row.base_to_amount + row.bonus_to_amount,
        base_to_amount=row.base_to_amount,
        bonus_to_amount=row.bonus_to_amount,
        rounded_down_to_amount=row.rounded_down_to_amount,
        rule_version=row.rule_version,
        from_units=row.from_units,
        to_units=row.to_units,
        expire_time=timestamp_from_micros(row.expire_time_us),
        annual_remaining_from_amount=row.annual_remaining_from_amount,
    )


def conversion_message(row, quote_row) -> pb.Conversion:
    return pb.Conversion(
        conversion_id=row.conversion_id,
        quote=quote_message(quote_row),
        state=pb.CONVERSION_STATE_COMPLETED if row.state == "completed" else pb.CONVERSION_STATE_FAILED,
        create_time=timestamp_from_micros(row.create_time_us),
    )
