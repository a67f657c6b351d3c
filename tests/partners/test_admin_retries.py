"""Every admin mutation, and AttachAlias, retried (also after a client-side timeout) applies
once; a request_id reused with other content is refused naming the field."""

from __future__ import annotations

import uuid

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of
from services.partners import model
from tests.partners.conftest import ADMIN_KEY, unique

Code = grpc.StatusCode


def _after_a_client_timeout(coalition, method, request, key=ADMIN_KEY):
    """A first send with a deadline too short to be answered (it may or may not be applied),
    then two retries of the same request: both return the same outcome, except `created`,
    which says whether that very call created it. Returns the last outcome."""
    try:
        coalition.call(method, request, key, timeout=0.001)
    except grpc.RpcError as error:
        assert error.code() == Code.DEADLINE_EXCEEDED
    first = coalition.call(method, request, key)
    last = coalition.call(method, request, key)
    if "created" in type(last).DESCRIPTOR.fields_by_name:
        assert not last.created
        first.created = False
    assert last == first
    return last


def _refusal(coalition, method, request) -> tuple[grpc.StatusCode, str, dict]:
    with pytest.raises(grpc.RpcError) as raised:
        coalition.call(method, request)
    info = error_info_of(raised.value)
    return raised.value.code(), info.reason, dict(info.metadata)


def test_create_earn_rule_retried_after_a_client_timeout_adds_one_version(coalition):
    shop = coalition.register_partner()  # version 1
    rule = pb.EarnRule(partner_id=shop.partner_id, currency_code="PTS", basis=pb.EARN_BASIS_AMOUNT, base_rate="2")
    request = pb.CreateEarnRuleRequest(rule=rule, request_id=unique("rule"))
    assert _after_a_client_timeout(coalition, "CreateEarnRule", request).rule.version == 2
    listed = coalition.call("ListEarnRules", pb.ListEarnRulesRequest(partner_id=shop.partner_id)).rules
    assert [item.version for item in listed] == [2, 1]
    request.rule.base_rate = "3"
    code, reason, metadata = _refusal(coalition, "CreateEarnRule", request)
    assert (code, reason, metadata["field"]) == (
        Code.ALREADY_EXISTS,
        "ID_REUSED_WITH_DIFFERENT_CONTENT",
        "rule.base_rate",
    )
    request.request_id = ""
    assert _refusal(coalition, "CreateEarnRule", request)[:2] == (Code.INVALID_ARGUMENT, "INVALID_REQUEST_ID")


def test_create_conversion_rule_retried_after_a_client_timeout_adds_one_version(coalition):
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=f"H{uuid.uuid4().hex[:8].upper()}")
    rule = pb.ConversionRule(
        from_currency_code="PTS",
        to_currency_code=hotel.currency,
        from_units=1,
        to_units=2,
        min_from_amount=100,
        step_from_amount=100,
        max_from_amount=10_000,
    )
    request = pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule"))
    assert _after_a_client_timeout(coalition, "CreateConversionRule", request).rule.version == 1
    again = pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule"))
    assert coalition.call("CreateConversionRule", again).rule.version == 2  # a new request_id is a new version
    request.rule.to_units = 3
    code, reason, metadata = _refusal(coalition, "CreateConversionRule", request)
    assert (code, reason, metadata["field"]) == (
        Code.ALREADY_EXISTS,
        "ID_REUSED_WITH_DIFFERENT_CONTENT",
        "rule.to_units",
    )


def test_issue_api_key_retry_shows_the_same_key_within_the_window_only(coalition):
    """The key is shown once: an exact retry within the window gets the same key id and
    secret (so a lost response costs nothing), later retries only learn which key it was."""
    shop = coalition.register_partner()
    request = pb.IssueApiKeyRequest(partner_id=shop.partner_id, request_id=unique("key"))
    issued = _after_a_client_timeout(coalition, "IssueApiKey", request)
    own = pb.GetPartnerRequest(partner_id=shop.partner_id)
    assert coalition.call("GetPartner", own, issued.api_key).partner.partner_id == shop.partner_id
    other = coalition.register_partner()
    reused = pb.IssueApiKeyRequest(partner_id=other.partner_id, request_id=request.request_id)
    code, reason, metadata = _refusal(coalition, "IssueApiKey", reused)
    assert (code, reason, metadata["field"]) == (Code.ALREADY_EXISTS, "ID_REUSED_WITH_DIFFERENT_CONTENT", "partner_id")
    rotate = pb.RotateApiKeyRequest(partner_id=shop.partner_id, key_id=shop.key_id, request_id=unique("rot"))
    rotated = _after_a_client_timeout(coalition, "RotateApiKey", rotate)
    assert rotated.revoked_key_info.key_id == shop.key_id and rotated.revoked_key_info.HasField("revoke_time")
    assert coalition.call("GetPartner", own, rotated.api_key).partner.partner_id == shop.partner_id
    coalition.clock.advance(model.API_KEY_RETRY_WINDOW_SECONDS + 1)
    for method, late in (("IssueApiKey", request), ("RotateApiKey", rotate)):
        code, reason, metadata = _refusal(coalition, method, late)
        assert (code, reason) == (Code.FAILED_PRECONDITION, "API_KEY_RETRY_WINDOW_PASSED"), method
        assert metadata["key_id"] in (issued.key_info.key_id, rotated.key_info.key_id)
    # The keys themselves still work; only their secrets are no longer shown.
    assert coalition.call("GetPartner", own, issued.api_key).partner.partner_id == shop.partner_id


def test_every_other_admin_mutation_retried_after_a_client_timeout_applies_once(coalition):
    partner = pb.Partner(partner_id=unique("p"), kind=pb.PARTNER_KIND_FUEL, display_name="Fuel Co")
    registered = _after_a_client_timeout(coalition, "RegisterPartner", pb.RegisterPartnerRequest(partner=partner))
    assert registered.partner.partner_id == partner.partner_id and not registered.created
    store = pb.Store(store_id=unique("s"), partner_id=partner.partner_id, display_name="A9")
    assert _after_a_client_timeout(coalition, "CreateStore", pb.CreateStoreRequest(store=store)).store == store
    terminal = pb.Terminal(store_id=store.store_id, terminal_id="pump-1")
    created = _after_a_client_timeout(coalition, "CreateTerminal", pb.CreateTerminalRequest(terminal=terminal))
    assert created.terminal == terminal and not created.created
    suspend = pb.SuspendPartnerRequest(partner_id=partner.partner_id)
    assert _after_a_client_timeout(coalition, "SuspendPartner", suspend).partner.status == pb.PARTNER_STATUS_SUSPENDED
    reactivate = pb.ReactivatePartnerRequest(partner_id=partner.partner_id)
    reactivated = _after_a_client_timeout(coalition, "ReactivatePartner", reactivate)
    assert reactivated.partner.status == pb.PARTNER_STATUS_ACTIVE
    issued = coalition.call("IssueApiKey", pb.IssueApiKeyRequest(partner_id=partner.partner_id, request_id=unique("k")))
    revoke = pb.RevokeApiKeyRequest(partner_id=partner.partner_id, key_id=issued.key_info.key_id)
    assert _after_a_client_timeout(coalition, "RevokeApiKey", revoke).key_info.HasField("revoke_time")
    own = pb.GetPartnerRequest(partner_id=partner.partner_id)
    assert coalition.error("GetPartner", own, issued.api_key) == (Code.UNAUTHENTICATED, "INVALID_API_KEY")


def test_attach_alias_twice_on_the_same_member_attaches_it_once(coalition):
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    email = pb.Alias(kind=pb.ALIAS_KIND_EMAIL, value=f"{unique('m')}@example.com")
    attach = pb.AttachAliasRequest(member_id=member_id, alias=email)
    assert _after_a_client_timeout(coalition, "AttachAlias", attach, shop.key).member.alias_count == 2
    assert coalition.call("AttachAlias", attach).member.alias_count == 2
    found = coalition.call("LookupMember", pb.LookupMemberRequest(alias=email), shop.key).member
    assert (found.member_id, found.alias_count) == (member_id, 2)
