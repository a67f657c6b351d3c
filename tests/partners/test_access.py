"""Authentication and partner isolation: every call without a key, and with another partner's key."""

from __future__ import annotations

import uuid

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.common.timeconv import timestamp_from_micros
from tests.partners.conftest import unique

Code = grpc.StatusCode
SERVICE = pb.DESCRIPTOR.services_by_name["PartnersService"]


@pytest.mark.parametrize("method", [method.name for method in SERVICE.methods])
def test_every_call_without_a_key_is_unauthenticated(coalition, method):
    request = getattr(pb, SERVICE.methods_by_name[method].input_type.name)()
    assert coalition.error(method, request, key=None) == (Code.UNAUTHENTICATED, "MISSING_CREDENTIALS")
    assert coalition.error(method, request, key="cpk_not-a-real-key") == (Code.UNAUTHENTICATED, "INVALID_API_KEY")


ADMIN_CALLS = [
    ("RegisterPartner", pb.RegisterPartnerRequest()),
    ("ListPartners", pb.ListPartnersRequest()),
    ("SuspendPartner", pb.SuspendPartnerRequest()),
    ("ReactivatePartner", pb.ReactivatePartnerRequest()),
    ("CreateStore", pb.CreateStoreRequest()),
    ("CreateTerminal", pb.CreateTerminalRequest()),
    ("IssueApiKey", pb.IssueApiKeyRequest()),
    ("RotateApiKey", pb.RotateApiKeyRequest()),
    ("RevokeApiKey", pb.RevokeApiKeyRequest()),
    ("CreateEarnRule", pb.CreateEarnRuleRequest()),
    ("CreateConversionRule", pb.CreateConversionRuleRequest()),
    ("SetTierDefinition", pb.SetTierDefinitionRequest()),
    ("ListStores", pb.ListStoresRequest()),
    ("ListTerminals", pb.ListTerminalsRequest()),
    ("ListApiKeys", pb.ListApiKeysRequest()),
]


def test_partner_keys_cannot_make_admin_calls(coalition):
    shop = coalition.register_partner()
    for method, request in ADMIN_CALLS:
        assert coalition.error(method, request, shop.key) == (Code.PERMISSION_DENIED, "ADMIN_REQUIRED"), method


def test_admin_key_cannot_act_at_a_till(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    earn = pb.EarnRequest(
        request_id=unique("e"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=100)],
    )
    assert coalition.error("Earn", earn) == (Code.PERMISSION_DENIED, "PARTNER_KEY_REQUIRED")


def test_a_partner_cannot_use_another_partners_store_receipts_or_holds(coalition):
    shop, rival = coalition.register_partner(), coalition.register_partner()
    member_id, _ = coalition.enroll()
    _, earn = coalition.earn(shop, member_id, [10_000])
    # Rival's key at the shop's till.
    earn.request_id = unique("e")
    assert coalition.error("Earn", earn, rival.key) == (Code.PERMISSION_DENIED, "STORE_NOT_OWNED")
    quote = pb.QuoteEarnRequest(point_of_sale=shop.pos(), lines=earn.lines)
    assert coalition.error("QuoteEarn", quote, rival.key) == (Code.PERMISSION_DENIED, "STORE_NOT_OWNED")
    wrong_terminal = pb.PointOfSale(store_id=rival.store_id, terminal_id="not-there")
    quote = pb.QuoteEarnRequest(point_of_sale=wrong_terminal, lines=earn.lines)
    assert coalition.error("QuoteEarn", quote, rival.key) == (Code.PERMISSION_DENIED, "TERMINAL_NOT_OWNED")
    # Rival's key on the shop's receipt, from the rival's own till: the receipt does not exist for it.
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=rival.pos(), receipt_id=earn.receipt_id, line_numbers=[1]
    )
    assert coalition.error("Return", back, rival.key) == (Code.NOT_FOUND, "RECEIPT_NOT_FOUND")
    hold = pb.AuthorizeRedemptionRequest(
        request_id=unique("h"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        currency_code="PTS",
        amount=5,
    )
    assert coalition.error("AuthorizeRedemption", hold, rival.key) == (Code.PERMISSION_DENIED, "STORE_NOT_OWNED")
    redemption = coalition.call("AuthorizeRedemption", hold, shop.key).redemption
    capture = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=redemption.redemption_id)
    assert coalition.error("CaptureRedemption", capture, rival.key) == (Code.NOT_FOUND, "REDEMPTION_NOT_FOUND")
    void = pb.VoidRedemptionRequest(request_id=unique("v"), redemption_id=redemption.redemption_id)
    assert coalition.error("VoidRedemption", void, rival.key) == (Code.NOT_FOUND, "REDEMPTION_NOT_FOUND")
    look = pb.GetRedemptionRequest(redemption_id=redemption.redemption_id)
    assert coalition.error("GetRedemption", look, rival.key) == (Code.NOT_FOUND, "REDEMPTION_NOT_FOUND")
    assert coalition.call("GetRedemption", look, shop.key).redemption.state == pb.REDEMPTION_STATE_AUTHORIZED
    # An offline batch made at the shop's till, uploaded with the rival's key: every item refused.
    offline = pb.OfflineEarn(earn=earn, occur_time=timestamp_from_micros(coalition.clock() - 60_000_000))
    offline.earn.request_id, offline.earn.receipt_id = unique("off"), unique("r")
    uploaded = coalition.call("UploadOfflineBatch", pb.UploadOfflineBatchRequest(earns=[offline]), rival.key)
    assert (uploaded.succeeded_count, uploaded.results[0].error_reason) == (0, "STORE_NOT_OWNED")
    # Partner data.
    other = pb.GetPartnerRequest(partner_id=shop.partner_id)
    assert coalition.error("GetPartner", other, rival.key) == (Code.PERMISSION_DENIED, "OTHER_PARTNER")
    rules = pb.ListEarnRulesRequest(partner_id=shop.partner_id)
    assert coalition.error("ListEarnRules", rules, rival.key) == (Code.PERMISSION_DENIED, "OTHER_PARTNER")
    assert coalition.call("GetPartner", pb.GetPartnerRequest(partner_id=rival.partner_id), rival.key)
    # Activity: the rival sees none of the shop's movements; the shop sees its own.
    activity = pb.ListMemberActivityRequest(member=pb.MemberIdentity(member_id=member_id))
    assert list(coalition.call("ListMemberActivity", activity, rival.key).items) == []
    own = coalition.call("ListMemberActivity", activity, shop.key).items
    assert {item.partner_id for item in own} == {shop.partner_id}
    assert any(item.kind == pb.ACTIVITY_KIND_EARN and item.posted_change == 50 for item in own)


def test_revoked_and_rotated_keys_stop_working(coalition):
    shop = coalition.register_partner()
    own = pb.GetPartnerRequest(partner_id=shop.partner_id)
    rotated = coalition.call(
        "RotateApiKey", pb.RotateApiKeyRequest(partner_id=shop.partner_id, key_id=shop.key_id, request_id=unique("rot"))
    )
    assert rotated.revoked_key_info.HasField("revoke_time")
    assert coalition.error("GetPartner", own, shop.key) == (Code.UNAUTHENTICATED, "INVALID_API_KEY")
    assert coalition.call("GetPartner", own, rotated.api_key).partner.partner_id == shop.partner_id
    revoke = pb.RevokeApiKeyRequest(partner_id=shop.partner_id, key_id=rotated.key_info.key_id)
    coalition.call("RevokeApiKey", revoke)
    coalition.call("RevokeApiKey", revoke)  # idempotent
    assert coalition.error("GetPartner", own, rotated.api_key) == (Code.UNAUTHENTICATED, "INVALID_API_KEY")


def test_register_partner_is_idempotent_and_refuses_different_content(coalition):
    partner = pb.Partner(partner_id=unique("p"), kind=pb.PARTNER_KIND_FUEL, display_name="Fuel Co")
    first = coalition.call("RegisterPartner", pb.RegisterPartnerRequest(partner=partner))
    again = coalition.call("RegisterPartner", pb.RegisterPartnerRequest(partner=partner))
    assert first.created and not again.created
    partner.display_name = "Other"
    assert coalition.error("RegisterPartner", pb.RegisterPartnerRequest(partner=partner)) == (
        Code.ALREADY_EXISTS,
        "PARTNER_EXISTS_WITH_DIFFERENT_CONTENT",
    )
    bad = pb.Partner(partner_id="Bad Id", kind=pb.PARTNER_KIND_FUEL, display_name="x")
    assert coalition.error("RegisterPartner", pb.RegisterPartnerRequest(partner=bad))[0] == Code.INVALID_ARGUMENT


def test_alias_lookup_and_alias_in_use(coalition):
    member_id, card = coalition.enroll()
    found = coalition.call("LookupMember", pb.LookupMemberRequest(alias=pb.Alias(kind=pb.ALIAS_KIND_CARD, value=card)))
    assert found.member.member_id == member_id
    email = pb.Alias(kind=pb.ALIAS_KIND_EMAIL, value=f"{unique('m')}@example.com")
    coalition.call("AttachAlias", pb.AttachAliasRequest(member_id=member_id, alias=email))
    upper = pb.Alias(kind=pb.ALIAS_KIND_EMAIL, value=email.value.upper())
    assert coalition.call("LookupMember", pb.LookupMemberRequest(alias=upper)).member.member_id == member_id
    other_id, _ = coalition.enroll()
    assert coalition.error("AttachAlias", pb.AttachAliasRequest(member_id=other_id, alias=email)) == (
        Code.ALREADY_EXISTS,
        "ALIAS_IN_USE",
    )
    unknown = pb.LookupMemberRequest(alias=pb.Alias(kind=pb.ALIAS_KIND_CARD, value="999999999999"))
    assert coalition.error("LookupMember", unknown) == (Code.NOT_FOUND, "MEMBER_NOT_FOUND")


def test_enrolment_and_store_registration_are_idempotent(coalition):
    shop = coalition.register_partner()
    card = pb.Alias(kind=pb.ALIAS_KIND_CARD, value=str(uuid.uuid4().int)[:16])
    request = pb.EnrollMemberRequest(request_id=unique("enroll"), aliases=[card])
    first = coalition.call("EnrollMember", request, shop.key).member
    assert coalition.call("EnrollMember", request, shop.key).member == first
    assert first.alias_count == 1
    # The same request_id with other aliases is a different enrolment, not a retry.
    other = pb.Alias(kind=pb.ALIAS_KIND_PHONE, value=f"+49170{uuid.uuid4().int % 10**7:07d}")
    reused = pb.EnrollMemberRequest(request_id=request.request_id, aliases=[card, other])
    assert coalition.error("EnrollMember", reused, shop.key) == (
        Code.ALREADY_EXISTS,
        "ID_REUSED_WITH_DIFFERENT_CONTENT",
    )
    unknown = pb.LookupMemberRequest(alias=other)
    assert coalition.error("LookupMember", unknown) == (Code.NOT_FOUND, "MEMBER_NOT_FOUND")
    store = pb.Store(store_id=shop.store_id, partner_id=shop.partner_id, display_name="Main")
    assert not coalition.call("CreateStore", pb.CreateStoreRequest(store=store)).created
    store.display_name = "Renamed"
    assert coalition.error("CreateStore", pb.CreateStoreRequest(store=store)) == (
        Code.ALREADY_EXISTS,
        "STORE_EXISTS_WITH_DIFFERENT_CONTENT",
    )


def test_every_call_with_another_partners_key_gets_the_documented_outcome(coalition):
    """Each RPC tried with a rival's key on the shop's things: admin calls are refused, the
    shop's stores, receipts, holds and quotes are refused or hidden, member look-ups are
    coalition-wide (documented), and balances, activity and conversions are filtered."""
    shop = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=f"H{uuid.uuid4().hex[:8].upper()}")
    rival = coalition.register_partner()
    coalition.call(
        "CreateConversionRule",
        pb.CreateConversionRuleRequest(
            request_id=unique("rule"),
            rule=pb.ConversionRule(
                from_currency_code=shop.currency,
                to_currency_code="PTS",
                from_units=1,
                to_units=1,
                min_from_amount=1,
                step_from_amount=1,
            ),
        ),
    )
    member_id, card = coalition.enroll()
    member = pb.MemberIdentity(member_id=member_id)
    _, earn = coalition.earn(shop, member_id, [10_000])  # 50 of the shop's own points
    coalition.earn(coalition.register_partner(), member_id, [10_000])  # 50 PTS elsewhere
    hold = pb.AuthorizeRedemptionRequest(
        request_id=unique("h"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=member,
        currency_code=shop.currency,
        amount=5,
    )
    redemption_id = coalition.call("AuthorizeRedemption", hold, shop.key).redemption.redemption_id
    convert = pb.QuoteConversionRequest(
        member=member, from_currency_code=shop.currency, to_currency_code="PTS", from_amount=10
    )
    quote_id = coalition.call("QuoteConversion", convert, shop.key).quote.quote_id
    executed = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote_id)
    coalition.call("ExecuteConversion", executed, shop.key)
    quote_id = coalition.call("QuoteConversion", convert, shop.key).quote.quote_id
    rival_hold = pb.AuthorizeRedemptionRequest()
    rival_hold.CopyFrom(hold)
    rival_hold.request_id, rival_hold.currency_code = unique("h"), "PTS"  # the shop's currency is refused sooner
    card_alias = pb.Alias(kind=pb.ALIAS_KIND_CARD, value=card)
    offline = pb.OfflineEarn(earn=earn, occur_time=timestamp_from_micros(coalition.clock() - 60_000_000))
    offline.earn.request_id, offline.earn.receipt_id = unique("off"), unique("r")
    refused, hidden, allowed = Code.PERMISSION_DENIED, Code.NOT_FOUND, Code.OK
    earn.request_id = unique("e")
    email = pb.Alias(kind=pb.ALIAS_KIND_EMAIL, value=f"{unique('m')}@example.com")
    partner_calls = {
        "GetPartner": (pb.GetPartnerRequest(partner_id=shop.partner_id), refused, "OTHER_PARTNER"),
        "ListEarnRules": (pb.ListEarnRulesRequest(partner_id=shop.partner_id), refused, "OTHER_PARTNER"),
        "EnrollMember": (pb.EnrollMemberRequest(request_id=unique("en")), allowed, ""),
        "AttachAlias": (pb.AttachAliasRequest(member_id=member_id, alias=email), allowed, ""),
        "LookupMember": (pb.LookupMemberRequest(alias=card_alias), allowed, ""),
        "GetMemberBalance": (pb.GetMemberBalanceRequest(member=member), allowed, ""),
        "ListMemberActivity": (pb.ListMemberActivityRequest(member=member), allowed, ""),
        "GetMemberTier": (
            pb.GetMemberTierRequest(member=member, currency_code=shop.currency),
            refused,
            "OTHER_PARTNER_CURRENCY",
        ),
        "ListTierDefinitions": (
            pb.ListTierDefinitionsRequest(currency_code=shop.currency),
            refused,
            "OTHER_PARTNER_CURRENCY",
        ),
        "GetMemberExpiringPoints": (
            pb.GetMemberExpiringPointsRequest(member=member, currency_code="PTS"),
            allowed,
            "",
        ),
        "QuoteEarn": (pb.QuoteEarnRequest(point_of_sale=shop.pos(), lines=earn.lines), refused, "STORE_NOT_OWNED"),
        "Earn": (earn, refused, "STORE_NOT_OWNED"),
        "UploadOfflineBatch": (pb.UploadOfflineBatchRequest(earns=[offline]), allowed, ""),
        "AuthorizeRedemption": (rival_hold, refused, "STORE_NOT_OWNED"),
        "CaptureRedemption": (
            pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=redemption_id),
            hidden,
            "REDEMPTION_NOT_FOUND",
        ),
        "VoidRedemption": (
            pb.VoidRedemptionRequest(request_id=unique("v"), redemption_id=redemption_id),
            hidden,
            "REDEMPTION_NOT_FOUND",
        ),
        "GetRedemption": (pb.GetRedemptionRequest(redemption_id=redemption_id), hidden, "REDEMPTION_NOT_FOUND"),
        "Return": (
            pb.ReturnRequest(
                request_id=unique("ret"), point_of_sale=rival.pos(), receipt_id=earn.receipt_id, line_numbers=[1]
            ),
            hidden,
            "RECEIPT_NOT_FOUND",
        ),
        "ListConversionRules": (pb.ListConversionRulesRequest(), allowed, ""),
        "QuoteConversion": (convert, refused, "CONVERSION_NOT_OWNED"),
        "ExecuteConversion": (
            pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote_id),
            hidden,
            "QUOTE_NOT_FOUND",
        ),
        "ListConversions": (pb.ListConversionsRequest(member=member), allowed, ""),
    }
    admin_calls = dict(ADMIN_CALLS)
    assert set(partner_calls) | set(admin_calls) == {method.name for method in SERVICE.methods}
    for method, request in admin_calls.items():
        assert coalition.error(method, request, rival.key) == (refused, "ADMIN_REQUIRED"), method
        assert coalition.error(method, request, None) == (Code.UNAUTHENTICATED, "MISSING_CREDENTIALS"), method
    answers = {}
    for method, (request, code, reason) in partner_calls.items():
        assert coalition.error(method, request, None) == (Code.UNAUTHENTICATED, "MISSING_CREDENTIALS"), method
        if code == allowed:
            answers[method] = coalition.call(method, request, rival.key)
        else:
            assert coalition.error(method, request, rival.key) == (code, reason), method
    # What the allowed calls show the rival: nothing of the shop's.
    assert answers["LookupMember"].member.member_id == member_id  # members belong to the coalition
    assert answers["AttachAlias"].member.member_id == member_id
    assert [item.currency_code for item in answers["GetMemberBalance"].balances] == ["PTS"]
    assert coalition.balance(member_id, shop.currency, shop.key).posted == 50 - 10
    assert list(answers["ListMemberActivity"].items) == []
    assert (answers["UploadOfflineBatch"].succeeded_count, answers["UploadOfflineBatch"].results[0].error_reason) == (
        0,
        "STORE_NOT_OWNED",
    )
    assert list(answers["ListConversions"].conversions) == []
    assert len(coalition.call("ListConversions", pb.ListConversionsRequest(member=member), shop.key).conversions) == 1
    assert coalition.call("GetRedemption", partner_calls["GetRedemption"][0], shop.key).redemption.state == (
        pb.REDEMPTION_STATE_AUTHORIZED
    )
