"""gRPC servicer: authenticate, proto in -> command -> use case -> proto out. Thin."""

from __future__ import annotations

import functools

from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common.errors import InvalidArgument
from services.partners import (
    admin_lists,
    captures,
    conversions,
    earning,
    members,
    model,
    partners_admin,
    redemptions,
    returns,
    rules_admin,
    tier_wire,
    tiering,
    wire,
)
from services.partners.access import Caller, authenticate, require_admin, require_self_or_admin
from services.partners.app import App
from services.partners.recording import as_service_error


def _rpc(admin: bool = False):
    """Authenticate and rate-limit every call; domain refusals become INVALID_ARGUMENT /
    FAILED_PRECONDITION."""

    def decorate(method):
        @functools.wraps(method)
        async def handler(self: PartnersApi, request, context):
            caller = await authenticate(self.app, context)
            self.app.rate_limits.admit_call(caller)
            if admin:
                require_admin(caller)
            try:
                return await method(self, request, caller)
            except model.DomainError as error:
                raise as_service_error(error) from None

        return handler

    return decorate


class PartnersApi(partners_pb2_grpc.PartnersServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    # ---- admin ----
    @_rpc(admin=True)
    async def RegisterPartner(self, request, caller: Caller):
        row, created = await partners_admin.register_partner(self.app, wire.new_partner(request.partner))
        return pb.RegisterPartnerResponse(partner=wire.partner_message(row), created=created)

    @_rpc()
    async def GetPartner(self, request, caller: Caller):
        require_self_or_admin(caller, request.partner_id)
        row = await partners_admin.get_partner(self.app, request.partner_id)
        return pb.GetPartnerResponse(partner=wire.partner_message(row))

    @_rpc(admin=True)
    async def ListPartners(self, request, caller: Caller):
        rows, token = await partners_admin.list_partners(self.app, request.page_size, request.page_token)
        return pb.ListPartnersResponse(partners=[wire.partner_message(row) for row in rows], next_page_token=token)

    @_rpc(admin=True)
    async def SuspendPartner(self, request, caller: Caller):
        row = await partners_admin.set_partner_status(self.app, request.partner_id, "suspended")
        return pb.SuspendPartnerResponse(partner=wire.partner_message(row))

    @_rpc(admin=True)
    async def ReactivatePartner(self, request, caller: Caller):
        row = await partners_admin.set_partner_status(self.app, request.partner_id, "active")
        return pb.ReactivatePartnerResponse(partner=wire.partner_message(row))

    @_rpc(admin=True)
    async def CreateStore(self, request, caller: Caller):
        source = request.store
        row, created = await partners_admin.create_store(
            self.app, source.store_id, source.partner_id, source.display_name
        )
        return pb.CreateStoreResponse(store=wire.store_message(row), created=created)

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
        return pb.IssueApiKeyResponse(key_info=wire.key_info_message(row), api_key=api_key)

    @_rpc(admin=True)
    async def RotateApiKey(self, request, caller: Caller):
        if not request.key_id:
            raise InvalidArgument("KEY_ID_REQUIRED", "key_id names the key to rotate")
        row, api_key, revoked = await partners_admin.issue_api_key(
            self.app, caller.partner_id, request.partner_id, request.request_id, request.key_id
        )
        return pb.RotateApiKeyResponse(
            key_info=wire.key_info_message(row), api_key=api_key, revoked_key_info=wire.key_info_message(revoked)
        )

    @_rpc(admin=True)
    async def RevokeApiKey(self, request, caller: Caller):
        row = await partners_admin.revoke_api_key(self.app, request.partner_id, request.key_id)
        return pb.RevokeApiKeyResponse(key_info=wire.key_info_message(row))

    @_rpc(admin=True)
    async def CreateEarnRule(self, request, caller: Caller):
        rule = await rules_admin.create_earn_rule(
            self.app, caller.partner_id, request.request_id, wire.earn_rule(request.rule)
        )
        return pb.CreateEarnRuleResponse(rule=wire.earn_rule_message(rule))

    @_rpc()
    async def ListEarnRules(self, request, caller: Caller):
        require_self_or_admin(caller, request.partner_id)
        rules = await rules_admin.list_earn_rules(self.app, request.partner_id)
        return pb.ListEarnRulesResponse(rules=[wire.earn_rule_message(rule) for rule in rules])

    @_rpc(admin=True)
    async def CreateConversionRule(self, request, caller: Caller):
        rule = await rules_admin.create_conversion_rule(
            self.app, caller.partner_id, request.request_id, wire.conversion_rule(request.rule)
        )
        return pb.CreateConversionRuleResponse(rule=wire.conversion_rule_message(rule))

    @_rpc(admin=True)
    async def SetTierDefinition(self, request, caller: Caller):
        definition, created = await tiering.set_tier_definition(
            self.app, *tier_wire.tier_definition(request.definition)
        )
        return pb.SetTierDefinitionResponse(definition=tier_wire.tier_definition_message(definition), created=created)

    @_rpc()
    async def ListTierDefinitions(self, request, caller: Caller):
        definitions = await tiering.list_tier_definitions(self.app, caller, request.currency_code)
        return pb.ListTierDefinitionsResponse(definitions=[tier_wire.tier_definition_message(d) for d in definitions])

    # ---- members ----
    @_rpc()
    async def EnrollMember(self, request, caller: Caller):
        aliases = [wire.alias(alias) for alias in request.aliases]
        for alias in aliases:  # ALIAS_IN_USE would answer what a look-up answers
            self.app.rate_limits.admit_member_lookup(caller, alias.kind)
        row, count = await members.enroll(self.app, caller, request.request_id, aliases)
        return pb.EnrollMemberResponse(member=wire.member_message(row, count))

    @_rpc()
    async def AttachAlias(self, request, caller: Caller):
        alias = wire.alias(request.alias)
        self.app.rate_limits.admit_member_lookup(caller, alias.kind)
        row, count = await members.attach_alias(self.app, request.member_id, alias)
        return pb.AttachAliasResponse(member=wire.member_message(row, count))

    @_rpc()
    async def LookupMember(self, request, caller: Caller):
        alias = wire.alias(request.alias)
        self.app.rate_limits.admit_member_lookup(caller, alias.kind)
        row, count = await members.lookup(self.app, members.MemberRef(alias=alias))
        return pb.LookupMemberResponse(member=wire.member_message(row, count))

    @_rpc()
    async def GetMemberBalance(self, request, caller: Caller):
        member = wire.member_ref(request.member)
        self._admit_member_read(caller, member)
        member_id, balances = await members.balances(self.app, caller, member)
        return pb.GetMemberBalanceResponse(
            member_id=member_id, balances=[wire.wallet_balance_message(item) for item in balances]
        )

    @_rpc()
    async def GetMemberExpiringPoints(self, request, caller: Caller):
        member = wire.member_ref(request.member)
        self._admit_member_read(caller, member)
        member_id, lots = await members.expiring(self.app, caller, member, request.currency_code)
        response = pb.GetMemberExpiringPointsResponse(member_id=member_id, currency_code=request.currency_code)
        if lots is not None:
            response.months.extend(pb.ExpiringMonth(month=m.month, amount=m.amount) for m in lots.expiring)
            if lots.HasField("inactivity_expire_time"):
                response.inactivity_expire_time.CopyFrom(lots.inactivity_expire_time)
        return response

    @_rpc()
    async def ListMemberActivity(self, request, caller: Caller):
        member = wire.member_ref(request.member)
        self._admit_member_read(caller, member)
        member_id, items = await members.activity(self.app, caller, member, request.currency_code, request.page_size)
        return pb.ListMemberActivityResponse(
            member_id=member_id, items=[wire.activity_item_message(item) for item in items]
        )

    @_rpc()
    async def GetMemberTier(self, request, caller: Caller):
        member = wire.member_ref(request.member)
        self._admit_member_read(caller, member)
        member_id, status = await tiering.member_tier(self.app, caller, member, request.currency_code)
        return tier_wire.member_tier_response(member_id, request.currency_code, status)

    def _admit_member_read(self, caller: Caller, member: members.MemberRef) -> None:
        if member.alias is not None:
            self.app.rate_limits.admit_member_lookup(caller, member.alias.kind)

    # ---- POS ----
    @_rpc()
    async def QuoteEarn(self, request, caller: Caller):
        member = wire.member_ref(request.member) if request.HasField("member") else None
        pricing = await earning.quote_earn(
            self.app,
            caller,
            request.point_of_sale.store_id,
            request.point_of_sale.terminal_id,
            member,
            wire.basket_lines(request.lines),
        )
        return pb.QuoteEarnResponse(pricing=wire.pricing_message(pricing))

    @_rpc()
    async def Earn(self, request, caller: Caller):
        return wire.earn_response(await earning.earn(self.app, caller, wire.earn_command(request)))

    @_rpc()
    async def UploadOfflineBatch(self, request, caller: Caller):
        commands = [wire.offline_earn_command(item) for item in request.earns]
        results = await earning.upload_offline_batch(self.app, caller, commands)
        return wire.offline_batch_response(results)

    @_rpc()
    async def AuthorizeRedemption(self, request, caller: Caller):
        row = await redemptions.authorize(self.app, caller, wire.authorize_command(request))
        return pb.AuthorizeRedemptionResponse(redemption=wire.redemption_message(row))

    @_rpc()
    async def CaptureRedemption(self, request, caller: Caller):
        row = await captures.capture(self.app, caller, request.request_id, request.redemption_id, request.amount)
        return pb.CaptureRedemptionResponse(redemption=wire.redemption_message(row))

    @_rpc()
    async def VoidRedemption(self, request, caller: Caller):
        row = await captures.void(self.app, caller, request.request_id, request.redemption_id)
        return pb.VoidRedemptionResponse(redemption=wire.redemption_message(row))

    @_rpc()
    async def GetRedemption(self, request, caller: Caller):
        row = await captures.get(self.app, caller, request.redemption_id)
        return pb.GetRedemptionResponse(redemption=wire.redemption_message(row))

    @_rpc()
    async def Return(self, request, caller: Caller):
        row = await returns.return_items(self.app, caller, wire.return_command(request))
        return wire.return_response(row)

    # ---- conversion ----
    @_rpc()
    async def ListConversionRules(self, request, caller: Caller):
        rules = await rules_admin.list_conversion_rules(self.app)
        return pb.ListConversionRulesResponse(rules=[wire.conversion_rule_message(rule) for rule in rules])

    @_rpc()
    async def QuoteConversion(self, request, caller: Caller):
        row = await conversions.quote(
            self.app,
            caller,
            wire.member_ref(request.member),
            request.from_currency_code,
            request.to_currency_code,
            request.from_amount,
        )
        return pb.QuoteConversionResponse(quote=wire.quote_message(row))

    @_rpc()
    async def ExecuteConversion(self, request, caller: Caller):
        row, quote_row = await conversions.execute(self.app, caller, request.request_id, request.quote_id)
        return pb.ExecuteConversionResponse(conversion=wire.conversion_message(row, quote_row))

    @_rpc()
    async def ListConversions(self, request, caller: Caller):
        rows = await conversions.history(self.app, caller, wire.member_ref(request.member), request.page_size)
        return pb.ListConversionsResponse(
            conversions=[wire.conversion_message(row, quote_row) for row, quote_row in rows]
        )

    # ---- operator lists ----
    @_rpc(admin=True)
    async def ListStores(self, request, caller: Caller):
        rows, token = await admin_lists.list_stores(self.app, request.partner_id, request.page_size, request.page_token)
        return pb.ListStoresResponse(stores=[wire.store_message(row) for row in rows], next_page_token=token)

    @_rpc(admin=True)
    async def ListTerminals(self, request, caller: Caller):
        rows, token = await admin_lists.list_terminals(
            self.app, request.partner_id, request.store_id, request.page_size, request.page_token
        )
        return pb.ListTerminalsResponse(terminals=[wire.terminal_message(row) for row in rows], next_page_token=token)

    @_rpc(admin=True)
    async def ListApiKeys(self, request, caller: Caller):
        rows, token = await admin_lists.list_api_keys(
            self.app, request.partner_id, request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(keys=[wire.key_info_message(row) for row in rows], next_page_token=token)
