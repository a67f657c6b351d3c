"""Abuse limits per partner API key, through real ledger and partners servers.

The partners server here has tight limits (5 calls at once, 2 per second; 2 phone or e-mail
look-ups at once, 6 per minute) and a monotonic clock the tests move by hand, so every
delay is exact. Each test registers its own partner, so its key starts with full buckets.
"""

from __future__ import annotations

import dataclasses
import uuid

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.common.errors import error_info_of, retry_info_of
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, unique
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread, start_partners_thread
from tests.support.snapshot import snapshot

CALLS_PER_SECOND = 2
CALLS_BURST = 5
LOOKUPS_PER_MINUTE = 6
LOOKUPS_BURST = 2
NS = 1_000_000_000


class HandMovedClock:
    """Monotonic nanoseconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now_ns = 1_000 * NS

    def __call__(self) -> int:
        return self.now_ns

    def advance_ns(self, nanoseconds: int) -> None:
        self.now_ns += nanoseconds


@dataclasses.dataclass
class Limited:
    coalition: Coalition
    clock: HandMovedClock
    partners_url: str
    ledger_url: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limited(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("rate-limits")
    ledger_url, ledger_cleanup = new_database_url(request.param, directory, "ledger")
    partners_url, partners_cleanup = new_database_url(request.param, directory, "partners")
    ledger = start_ledger_thread(ledger_url)
    clock = HandMovedClock()
    partners = start_partners_thread(
        partners_url,
        ledger.address,
        ADMIN_KEY,
        rate_limit_clock=clock,
        rate_limit_calls_per_second=CALLS_PER_SECOND,
        rate_limit_burst_calls=CALLS_BURST,
        lookup_rate_limit_calls_per_minute=LOOKUPS_PER_MINUTE,
        lookup_rate_limit_burst_calls=LOOKUPS_BURST,
    )
    client = Coalition(partners.address, MovableClock(), ledger.address)
    yield Limited(client, clock, partners_url, ledger_url)
    client.close()
    partners.stop()
    ledger.stop()
    partners_cleanup()
    ledger_cleanup()


def _cheap_call(coalition: Coalition, key: str):
    return coalition.call("ListConversionRules", pb.ListConversionRulesRequest(), key)


def _refusal(coalition: Coalition, method: str, request, key: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        coalition.call(method, request, key)
    return raised.value


def _retry_after(error: grpc.RpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("retry-after", "")


def _retry_delay_ns(error: grpc.RpcError) -> int:
    delay = retry_info_of(error).retry_delay
    return delay.seconds * NS + delay.nanos


def _phone() -> str:
    return f"+49170{uuid.uuid4().int % 10**7:07d}"


def _exhaust(coalition: Coalition, key: str) -> None:
    for _ in range(CALLS_BURST):
        _cheap_call(coalition, key)


def test_a_burst_above_the_limit_is_rate_limited_with_retry_info_and_retry_after(limited):
    coalition = limited.coalition
    shop = coalition.register_partner()
    _exhaust(coalition, shop.key)
    refused = _refusal(coalition, "ListConversionRules", pb.ListConversionRulesRequest(), shop.key)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info_of(refused)
    assert info.reason == "RATE_LIMITED"
    assert dict(info.metadata) == {
        "limit": "calls",
        "limit_calls": str(CALLS_PER_SECOND),
        "limit_period_seconds": "1",
        "limit_burst": str(CALLS_BURST),
        "retry_after_seconds": "1",
    }
    # The clock stood still: one token comes back after exactly 1/2 s, announced as 1 whole second.
    assert _retry_delay_ns(refused) == NS // CALLS_PER_SECOND
    assert _retry_after(refused) == "1"
    assert "retry in 0.500 s" in refused.details()


def test_other_keys_and_the_admin_key_are_not_limited_by_one_keys_burst(limited):
    coalition = limited.coalition
    shop, neighbour = coalition.register_partner(), coalition.register_partner()
    _exhaust(coalition, shop.key)
    assert _refusal(coalition, "ListConversionRules", pb.ListConversionRulesRequest(), shop.key).code() == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    _exhaust(coalition, neighbour.key)  # another partner's key has its own full bucket
    second = coalition.call("IssueApiKey", pb.IssueApiKeyRequest(partner_id=shop.partner_id, request_id=unique("k")))
    _cheap_call(coalition, second.api_key)  # and so has another key of the same partner
    for _ in range(3 * CALLS_BURST):
        _cheap_call(coalition, ADMIN_KEY)


def test_tokens_come_back_after_the_retry_delay_and_not_before(limited):
    coalition, clock = limited.coalition, limited.clock
    shop = coalition.register_partner()
    _exhaust(coalition, shop.key)
    delay_ns = _retry_delay_ns(_refusal(coalition, "ListConversionRules", pb.ListConversionRulesRequest(), shop.key))
    clock.advance_ns(delay_ns - 1)
    early = _refusal(coalition, "ListConversionRules", pb.ListConversionRulesRequest(), shop.key)
    assert _retry_delay_ns(early) == 1
    assert _retry_after(early) == "1"  # rounded up: never "0"
    clock.advance_ns(1)
    _cheap_call(coalition, shop.key)
    # One token came back, not more; a long quiet spell refills the burst and no further.
    assert _refusal(coalition, "ListConversionRules", pb.ListConversionRulesRequest(), shop.key).code() == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    clock.advance_ns(3_600 * NS)
    _exhaust(coalition, shop.key)
    assert error_info_of(
        _refusal(coalition, "ListConversionRules", pb.ListConversionRulesRequest(), shop.key)
    ).reason == ("RATE_LIMITED")


def test_lookup_by_phone_or_email_has_a_tighter_limit_and_card_lookups_do_not(limited):
    coalition = limited.coalition
    shop = coalition.register_partner()
    phone = pb.Alias(kind=pb.ALIAS_KIND_PHONE, value=_phone())
    email = pb.Alias(kind=pb.ALIAS_KIND_EMAIL, value=f"{unique('m')}@example.com")
    card = pb.Alias(kind=pb.ALIAS_KIND_CARD, value=str(uuid.uuid4().int)[:16])
    enrolled = coalition.call(
        "EnrollMember", pb.EnrollMemberRequest(request_id=unique("enroll"), aliases=[phone, email, card])
    )
    member_id = enrolled.member.member_id
    for alias in (phone, email):  # the lookup burst: 2
        assert coalition.call("LookupMember", pb.LookupMemberRequest(alias=alias), shop.key).member.member_id == (
            member_id
        )
    # A number nobody has is the probe this limit is for: refused before it is looked up.
    stranger = pb.LookupMemberRequest(alias=pb.Alias(kind=pb.ALIAS_KIND_PHONE, value=_phone()))
    refused = _refusal(coalition, "LookupMember", stranger, shop.key)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info_of(refused)
    assert (info.reason, info.metadata["limit"]) == ("RATE_LIMITED", "lookups_by_phone_or_email")
    assert _retry_delay_ns(refused) == 60 * NS // LOOKUPS_PER_MINUTE
    assert _retry_after(refused) == "10"
    assert "retry in 10.000 s" in refused.details()
    # The card is what tills scan: it takes only the call bucket, which still has tokens (3 of 5 used).
    found = coalition.call("LookupMember", pb.LookupMemberRequest(alias=card), shop.key)
    assert found.member.member_id == member_id
    # The same probe through a balance read by phone meets the same limit (the call bucket's last token).
    by_phone = pb.GetMemberBalanceRequest(member=pb.MemberIdentity(alias=stranger.alias))
    refused = _refusal(coalition, "GetMemberBalance", by_phone, shop.key)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(refused).metadata["limit"] == "lookups_by_phone_or_email"
    # The operator is not limited.
    for _ in range(3 * LOOKUPS_BURST):
        assert coalition.call("LookupMember", pb.LookupMemberRequest(alias=phone)).member.member_id == member_id


def test_a_rate_limited_call_writes_nothing(limited):
    coalition = limited.coalition
    shop = coalition.register_partner()
    member_id, _ = coalition.enroll()
    _exhaust(coalition, shop.key)
    before = snapshot(limited.partners_url), snapshot(limited.ledger_url)
    earn = pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=shop.pos(),
        receipt_id=unique("r"),
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, category="grocery", quantity=1000, amount=4000)],
    )
    enrol = pb.EnrollMemberRequest(
        request_id=unique("enroll"), aliases=[pb.Alias(kind=pb.ALIAS_KIND_PHONE, value=_phone())]
    )
    for method, request in (("Earn", earn), ("EnrollMember", enrol)):
        assert error_info_of(_refusal(coalition, method, request, shop.key)).reason == "RATE_LIMITED"
    assert (snapshot(limited.partners_url), snapshot(limited.ledger_url)) == before
    # Once the tokens are back the same earn is a first call, not a retry of anything.
    limited.clock.advance_ns(NS)
    assert coalition.call("Earn", earn, shop.key).pricing.points == 20
    assert coalition.balance(member_id).posted == 20


def test_enrolling_or_attaching_a_phone_takes_the_look_up_token_since_alias_in_use_answers_a_look_up(limited):
    coalition = limited.coalition
    shop = coalition.register_partner()
    taken = pb.Alias(kind=pb.ALIAS_KIND_PHONE, value=_phone())
    coalition.call("EnrollMember", pb.EnrollMemberRequest(request_id=unique("enroll"), aliases=[taken]))  # admin
    probe = pb.EnrollMemberRequest(request_id=unique("enroll"), aliases=[taken])
    for _ in range(LOOKUPS_BURST):
        assert _refusal(coalition, "EnrollMember", probe, shop.key).code() == grpc.StatusCode.ALREADY_EXISTS
        probe = pb.EnrollMemberRequest(request_id=unique("enroll"), aliases=[taken])
    refused = _refusal(coalition, "EnrollMember", probe, shop.key)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info_of(refused).metadata["limit"] == "lookups_by_phone_or_email"
    attach = pb.AttachAliasRequest(member_id="m-unknown", alias=taken)
    assert error_info_of(_refusal(coalition, "AttachAlias", attach, shop.key)).reason == "RATE_LIMITED"
    # A card takes only the ordinary token.
    card = pb.Alias(kind=pb.ALIAS_KIND_CARD, value=str(uuid.uuid4().int)[:16])
    coalition.call("EnrollMember", pb.EnrollMemberRequest(request_id=unique("enroll"), aliases=[card]), shop.key)
