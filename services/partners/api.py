"""gRPC servicer: authenticate, proto in -> command -> use case -> proto out. Thin."""

from __future__ import annotations

import functools
from decimal import Decimal

from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from services.partners import conversions, earning, members, model, partners_admin, redemptions, returns
from services.partners.access import Caller, authenticate, require_admin, require_self_or_admin
from services.partners.app import App
from services.partners.earning import as_service_error

_KINDS = {
    pb.PARTNER_KIND_RETAILER: "retailer",
    pb.PARTNER_KIND_FUEL: "fuel",
    pb.PARTNER_KIND_HOTEL: "hotel",
    pb.PARTNER_KIND_AIRLINE: "airline",
}
_KIND_ENUMS = {value: key for key, value in _KINDS.items()}
_ALIAS_KINDS = {pb.ALIAS_KIND_CARD: "card", pb.ALIAS_KIND_PHONE: "phone", pb.ALIAS_KIND_EMAIL: "email"}
_BASES = {pb.EARN_BASIS_AMOUNT: model.BASIS_AMOUNT, pb.EARN_BASIS_QUANTITY: model.BASIS_QUANTITY}
_BASIS_ENUMS = {value: key for key, value in _BASES.items()}
_PROMOTIONS = {
    pb.PROMOTION_KIND_MULTIPLIER: model.PROMOTION_MULTIPLIER,
    pb.PROMOTION_KIND_FIXED_BONUS: model.PROMOTION_FIXED_BONUS,
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


def _rpc(admin: bool = False):
    """Authenticate every call; domain refusals become INVALID_ARGUMENT / FAILED_PRECONDITION."""

    def decorate(method):
        @functools.wraps(method)
        async def handler(self: PartnersApi, request, context):
            caller = await authenticate(self.app, context)
            if admin:
                require_admin(caller)
            try:
                return await method(self, request, caller)
            except model.DomainError as error:
                raise as_service_error(error) from None

        return handler

    return decorate


# ---- proto -> domain ----
def _alias(message: pb.Alias) -> members.AliasInput:
    kind = _ALIAS_KINDS.get(message.kind)
    if kind is None:
        raise InvalidArgument("INVALID_ALIAS", "alias.kind must be CARD, PHONE or EMAIL", field="alias.kind")
    return members.AliasInput(kind, message.value)


def _member_ref(message: pb.MemberIdentity) -> members.MemberRef:
    which = message.WhichOneof("identity")
    if which == "alias":
        return members.MemberRef(alias=_alias(message.alias))
    if which == "member_id":
        return members.MemberRef(member_id=message.member_id)
    raise InvalidArgument("MEMBER_REQUIRED", "name the member by member_id or alias", field="member")


def _lines(messages) -> list[model.BasketLine]:
    return [
        model.BasketLine(line.line_number, line.sku, line.category, line.quantity, line.amount) for line in messages
    ]


def _optional_time(message, field: str) -> int | None:
    return micros_from_timestamp(getattr(message, field)) if message.HasField(field) else None


def _earn_rule(message: pb.EarnRule) -> model.EarnRule:
    promotion = None
    if message.HasField("promotion") and message.promotion.kind != pb.PROMOTION_KIND_UNSPECIFIED:
        source = message.promotion
        kind = _PROMOTIONS.get(source.kind, "")
        promotion = model.Promotion(
            kind=kind,
            start_micros=micros_from_timestamp(source.start_time),
            end_micros=micros_from_timestamp(source.end_time),
            multiplier=model.parse_decimal(
                source.multiplier or "1", "promotion.multiplier", minimum=Decimal(0), maximum=model.MULTIPLIER_MAX
            ),
            bonus_points=source.bonus_points,
            threshold_amount=source.threshold_amount,
        )
    return model.EarnRule(
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
        valid_to_micros=_optional_time(message, "valid_to_time"),
    )


def _conversion_rule(message: pb.ConversionRule) -> model.ConversionRule:
    return model.ConversionRule(
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
        valid_to_micros=_optional_time(message, "valid_to_time"),
    )


# ---- domain -> proto ----
def _partner(row) -> pb.Partner:
    return pb.Partner(
        partner_id=row.partner_id,
        kind=_KIND_ENUMS[row.kind],
        display_name=row.display_name,
        programme_currency_code=row.programme_currency_code or "",
        status=pb.PARTNER_STATUS_ACTIVE if row.status == "active" else pb.PARTNER_STATUS_SUSPENDED,
        create_time=timestamp_from_micros(row.create_time_us),
    )


def _key_info(row) -> pb.ApiKeyInfo:
    info = pb.ApiKeyInfo(
        key_id=row.key_id, partner_id=row.partner_id, create_time=timestamp_from_micros(row.create_time_us)
    )
    if row.revoke_time_us is not None:
        info.revoke_time.CopyFrom(timestamp_from_micros(row.revoke_time_us))
    return info


def _earn_rule_message(rule: model.EarnRule) -> pb.EarnRule:
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


def _conversion_rule_message(rule: model.ConversionRule) -> pb.ConversionRule:
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


def _member(row, alias_count: int) -> pb.Member:
    return pb.Member(
        member_id=row.member_id, create_time=timestamp_from_micros(row.create_time_us), alias_count=alias_count
    )


def _pricing(pricing: model.EarnPricing) -> pb.EarnPricing:
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
            )
            for line in pricing.lines
        ],
    )


def _earn_response(record: earning.EarnRecord) -> pb.EarnResponse:
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
                )
                for line in record.lines
            ],
        ),
    )


def _redemption(row) -> pb.Redemption:
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


def _quote(row) -> pb.ConversionQuote:
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


def _conversion(row, quote_row) -> pb.Conversion:
    return pb.Conversion(
        conversion_id=row.conversion_id,
        quote=_quote(quote_row),
        state=pb.CONVERSION_STATE_COMPLETED if row.state == "completed" else pb.CONVERSION_STATE_FAILED,
        create_time=timestamp_from_micros(row.create_time_us),
    )


def _earn_command(message: pb.EarnRequest, occur_time_us: int | None = None) -> earning.EarnCommand:
    return earning.EarnCommand(
        request_id=message.request_id,
        store_id=message.point_of_sale.store_id,
        terminal_id=message.point_of_sale.terminal_id,
        receipt_id=message.receipt_id,
        member=_member_ref(message.member),
        lines=_lines(message.lines),
        occur_time_us=occur_time_us,
    )


class PartnersApi(partners_pb2_grpc.PartnersServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    # ---- admin ----
    @_rpc(admin=True)
    async def RegisterPartner(self, request, caller: Caller):
        source = request.partner
        command = partners_admin.NewPartner(
            source.partner_id, _KINDS.get(source.kind, ""), source.display_name, source.programme_currency_code
        )
        row, created = await partners_admin.register_partner(self.app, command)
        return pb.RegisterPartnerResponse(partner=_partner(row), created=created)

    @_rpc()
    async def GetPartner(self, request, caller: Caller):
        require_self_or_admin(caller, request.partner_id)
        return pb.GetPartnerResponse(partner=_partner(await partners_admin.get_partner(self.app, request.partner_id)))

    @_rpc(admin=True)
    async def ListPartners(self, request, caller: Caller):
        rows, token = await partners_admin.list_partners(self.app, request.page_size, request.page_token)
        return pb.ListPartnersResponse(partners=[_partner(row) for row in rows], next_page_token=token)

    @_rpc(admin=True)
    async def SuspendPartner(self, request, caller: Caller):
        row = await partners_admin.set_partner_status(self.app, request.partner_id, "suspended")
        return pb.SuspendPartnerResponse(partner=_partner(row))

    @_rpc(admin=True)
    async def ReactivatePartner(self, request, caller: Caller):
        row = await partners_admin.set_partner_status(self.app, request.partner_id, "active")
        return pb.ReactivatePartnerResponse(partner=_partner(row))

    @_rpc(admin=True)
    async def CreateStore(self, request, caller: Caller):
        source = request.store
        row, created = await partners_admin.create_store(
            self.app, source.store_id, source.partner_id, source.display_name
        )
        store_message = pb.Store(store_id=row.store_id, partner_id=row.partner_id, display_name=row.display_name)
        return pb.CreateStoreResponse(store=store_message, created=created)

    @_rpc(admin=True)
    async def CreateTerminal(self, request, caller: Caller):
        source = request.terminal
        created = await partners_admin.create_terminal(self.app, source.store_id, source.terminal_id)
        return pb.CreateTerminalResponse(terminal=source, created=created)

    @_rpc(admin=True)
    async def IssueApiKey(self, request, caller: Caller):
        row, api_key, _ = await partners_admin.issue_api_key(
            self.app, caller.partner_id, request.partner_id, request.request_id
        )
        return pb.IssueApiKeyResponse(key_info=_key_info(row), api_key=api_key)

    @_rpc(admin=True)
    async def RotateApiKey(self, request, caller: Caller):
        if not request.key_id:
            raise InvalidArgument("KEY_ID_REQUIRED", "key_id names the key to rotate")
        row, api_key, revoked = await partners_admin.issue_api_key(
            self.app, caller.partner_id, request.partner_id, request.request_id, request.key_id
        )
        return pb.RotateApiKeyResponse(key_info=_key_info(row), api_key=api_key, revoked_key_info=_key_info(revoked))

    @_rpc(admin=True)
    async def RevokeApiKey(self, request, caller: Caller):
        row = await partners_admin.revoke_api_key(self.app, request.partner_id, request.key_id)
        return pb.RevokeApiKeyResponse(key_info=_key_info(row))

    @_rpc(admin=True)
    async def CreateEarnRule(self, request, caller: Caller):
        rule = await partners_admin.create_earn_rule(
            self.app, caller.partner_id, request.request_id, _earn_rule(request.rule)
        )
        return pb.CreateEarnRuleResponse(rule=_earn_rule_message(rule))

    @_rpc()
    async def ListEarnRules(self, request, caller: Caller):
        require_self_or_admin(caller, request.partner_id)
        rules = await partners_admin.list_earn_rules(self.app, request.partner_id)
        return pb.ListEarnRulesResponse(rules=[_earn_rule_message(rule) for rule in rules])

    @_rpc(admin=True)
    async def CreateConversionRule(self, request, caller: Caller):
        rule = await partners_admin.create_conversion_rule(
            self.app, caller.partner_id, request.request_id, _conversion_rule(request.rule)
        )
        return pb.CreateConversionRuleResponse(rule=_conversion_rule_message(rule))

    # ---- members ----
    @_rpc()
    async def EnrollMember(self, request, caller: Caller):
        aliases = [_alias(alias) for alias in request.aliases]
        row, count = await members.enroll(self.app, caller, request.request_id, aliases)
        return pb.EnrollMemberResponse(member=_member(row, count))

    @_rpc()
    async def AttachAlias(self, request, caller: Caller):
        row, count = await members.attach_alias(self.app, request.member_id, _alias(request.alias))
        return pb.AttachAliasResponse(member=_member(row, count))

    @_rpc()
    async def LookupMember(self, request, caller: Caller):
        row, count = await members.lookup(self.app, members.MemberRef(alias=_alias(request.alias)))
        return pb.LookupMemberResponse(member=_member(row, count))

    @_rpc()
    async def GetMemberBalance(self, request, caller: Caller):
        member_id, balances = await members.balances(self.app, caller, _member_ref(request.member))
        return pb.GetMemberBalanceResponse(
            member_id=member_id,
            balances=[
                pb.WalletBalance(
                    currency_code=item.currency_code, posted=item.posted, pending=item.pending, available=item.available
                )
                for item in balances
            ],
        )

    @_rpc()
    async def ListMemberActivity(self, request, caller: Caller):
        member_id, items = await members.activity(
            self.app, caller, _member_ref(request.member), request.currency_code, request.page_size
        )
        return pb.ListMemberActivityResponse(
            member_id=member_id,
            items=[
                pb.ActivityItem(
                    commit_time=timestamp_from_micros(item.commit_time_us),
                    kind=_ACTIVITY.get(item.kind, pb.ACTIVITY_KIND_UNSPECIFIED),
                    currency_code=item.currency_code,
                    posted_change=item.posted_change,
                    pending_change=item.pending_change,
                    partner_id=item.partner_id,
                    store_id=item.store_id,
                    receipt_id=item.receipt_id,
                )
                for item in items
            ],
        )

    # ---- POS ----
    @_rpc()
    async def QuoteEarn(self, request, caller: Caller):
        member = _member_ref(request.member) if request.HasField("member") else None
        pricing = await earning.quote_earn(
            self.app,
            caller,
            request.point_of_sale.store_id,
            request.point_of_sale.terminal_id,
            member,
            _lines(request.lines),
        )
        return pb.QuoteEarnResponse(pricing=_pricing(pricing))

    @_rpc()
    async def Earn(self, request, caller: Caller):
        return _earn_response(await earning.earn(self.app, caller, _earn_command(request)))

    @_rpc()
    async def UploadOfflineBatch(self, request, caller: Caller):
        commands = []
        for item in request.earns:
            if not item.HasField("occur_time"):
                raise InvalidArgument("OCCUR_TIME_REQUIRED", "every offline earn needs occur_time")
            commands.append(_earn_command(item.earn, micros_from_timestamp(item.occur_time)))
        results = await earning.upload_offline_batch(self.app, caller, commands)
        response = pb.UploadOfflineBatchResponse()
        for index, result in enumerate(results):
            item = response.results.add(index=index, request_id=result.request_id)
            if result.record is not None:
                item.earn.CopyFrom(_earn_response(result.record))
                response.succeeded_count += 1
            else:
                item.error_reason, item.error_message = result.error.reason, result.error.message
                response.failed_count += 1
        return response

    @_rpc()
    async def AuthorizeRedemption(self, request, caller: Caller):
        command = redemptions.AuthorizeCommand(
            request_id=request.request_id,
            store_id=request.point_of_sale.store_id,
            terminal_id=request.point_of_sale.terminal_id,
            receipt_id=request.receipt_id,
            member=_member_ref(request.member),
            currency_code=request.currency_code,
            amount=request.amount,
            hold_timeout_seconds=request.hold_timeout_seconds,
        )
        row = await redemptions.authorize(self.app, caller, command)
        return pb.AuthorizeRedemptionResponse(redemption=_redemption(row))

    @_rpc()
    async def CaptureRedemption(self, request, caller: Caller):
        row = await redemptions.capture(self.app, caller, request.request_id, request.redemption_id, request.amount)
        return pb.CaptureRedemptionResponse(redemption=_redemption(row))

    @_rpc()
    async def VoidRedemption(self, request, caller: Caller):
        row = await redemptions.void(self.app, caller, request.request_id, request.redemption_id)
        return pb.VoidRedemptionResponse(redemption=_redemption(row))

    @_rpc()
    async def GetRedemption(self, request, caller: Caller):
        row = await redemptions.get(self.app, caller, request.redemption_id)
        return pb.GetRedemptionResponse(redemption=_redemption(row))

    @_rpc()
    async def Return(self, request, caller: Caller):
        command = returns.ReturnCommand(
            request_id=request.request_id,
            store_id=request.point_of_sale.store_id,
            terminal_id=request.point_of_sale.terminal_id,
            receipt_id=request.receipt_id,
            line_numbers=list(request.line_numbers),
            redeemed_refund_amount=request.redeemed_refund_amount,
        )
        row = await returns.return_items(self.app, caller, command)
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
        )

    # ---- conversion ----
    @_rpc()
    async def ListConversionRules(self, request, caller: Caller):
        rules = await partners_admin.list_conversion_rules(self.app)
        return pb.ListConversionRulesResponse(rules=[_conversion_rule_message(rule) for rule in rules])

    @_rpc()
    async def QuoteConversion(self, request, caller: Caller):
        row = await conversions.quote(
            self.app,
            caller,
            _member_ref(request.member),
            request.from_currency_code,
            request.to_currency_code,
            request.from_amount,
        )
        return pb.QuoteConversionResponse(quote=_quote(row))

    @_rpc()
    async def ExecuteConversion(self, request, caller: Caller):
        row, quote_row = await conversions.execute(self.app, caller, request.request_id, request.quote_id)
        return pb.ExecuteConversionResponse(conversion=_conversion(row, quote_row))

    @_rpc()
    async def ListConversions(self, request, caller: Caller):
        rows = await conversions.history(self.app, caller, _member_ref(request.member), request.page_size)
        return pb.ListConversionsResponse(conversions=[_conversion(row, quote_row) for row, quote_row in rows])
