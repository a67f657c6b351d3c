"""Tiers through the real servers, on SQLite and PostgreSQL: an upgrade that applies at the next
earn and a downgrade that waits for the evaluation plus grace (on the server's movable clock); a
tier multiplier that QuoteEarn and Earn agree on, with the bonus per line and in the ledger's
metadata; a return that reverses its lines' bonus and qualifying points without a downgrade at
the till; the member's read and who may make it; the operator's refusals; concurrent earns of
one member. Each test has its own programme currency, so no test sees another's tiers (the PTS
test is last in the module: from then on PTS earns here have tiers)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common.errors import error_info_of
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from services.partners import tiers
from tests.partners.conftest import ADMIN_KEY, unique
from tests.support.tls import channel as tls_channel

Code = grpc.StatusCode
ZONE = ZoneInfo("Europe/Amsterdam")  # the servers' default COALITION_TIME_ZONE
HOUR_S = 3_600
LEVELS = (("Base", 0, "1"), ("Silver", 100, "1.25"), ("Gold", 1_000, "1.5"))


def _programme(coalition):
    """A partner with its own programme currency and 1 point per euro."""
    return coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=f"T{uuid.uuid4().hex[:8].upper()}", base_rate="1")


def _definition(currency: str, levels=LEVELS, grace: int = 2, **fields) -> pb.TierDefinition:
    fields.setdefault("measure", pb.TIER_MEASURE_QUALIFYING_POINTS)
    fields.setdefault("window", pb.TIER_WINDOW_CALENDAR_YEAR)
    return pb.TierDefinition(
        currency_code=currency,
        downgrade_grace_months=grace,
        levels=[pb.TierLevel(name=name, threshold=threshold, earn_multiplier=m) for name, threshold, m in levels],
        **fields,
    )


def _set(coalition, definition: pb.TierDefinition) -> pb.SetTierDefinitionResponse:
    return coalition.call("SetTierDefinition", pb.SetTierDefinitionRequest(definition=definition))


def _tier(coalition, member_id: str, currency: str, key: str = ADMIN_KEY) -> pb.GetMemberTierResponse:
    request = pb.GetMemberTierRequest(member=pb.MemberIdentity(member_id=member_id), currency_code=currency)
    return coalition.call("GetMemberTier", request, key)


def _transfer(coalition, transfer_id: str) -> ledger_pb2.Transfer:
    with tls_channel(coalition.ledger_address) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        [found] = ledger.GetTransfers(ledger_pb2.GetTransfersRequest(ids=[transfer_id]), timeout=10).transfers
    return found


def _end_of_year_plus(now_us: int, years: int, months: int) -> int:
    """The start of the local month `months` into the year `years` after now's."""
    return tiers.month_start_us((tiers.month_of(now_us, ZONE) // 12 + years) * 12 + months, ZONE)


def test_an_upgrade_applies_at_the_next_earn_and_a_downgrade_waits_for_the_evaluation_plus_grace(coalition):
    shop = _programme(coalition)
    assert _set(coalition, _definition(shop.currency)).created
    member_id, _ = coalition.enroll()
    first, _ = coalition.earn(shop, member_id, [12_000])
    # The earn that qualifies is priced at the tier the member had: 120 base points, no bonus.
    assert (first.pricing.points, first.pricing.tier_name, first.pricing.tier_bonus_points) == (120, "Base", 0)
    now = coalition.clock()
    status = _tier(coalition, member_id, shop.currency, shop.key)
    assert status.has_tiers and (status.tier.name, status.tier_position) == ("Silver", 1)
    assert (status.qualifying_amount, status.next_tier.name, status.next_tier_needed_amount) == (120, "Gold", 880)
    assert status.keep_tier_needed_amount == 0 and status.measure == pb.TIER_MEASURE_QUALIFYING_POINTS
    assert now - 60_000_000 < micros_from_timestamp(status.since_time) <= now
    # Reached this year: kept through next year, downgraded two grace months after it.
    valid_until = micros_from_timestamp(status.valid_until_time)
    assert valid_until == _end_of_year_plus(now, 2, 2)
    assert micros_from_timestamp(status.window_start_time) == _end_of_year_plus(now, 0, 0)
    assert micros_from_timestamp(status.window_end_time) == _end_of_year_plus(now, 1, 0)
    second, _ = coalition.earn(shop, member_id, [10_000])
    assert (second.pricing.points, second.pricing.tier_bonus_points) == (125, 25)
    assert (second.pricing.tier_name, second.pricing.tier_multiplier) == ("Silver", "1.25")
    # Just before the downgrade: still Silver, and a small earn in the grace does not requalify.
    coalition.clock.advance((valid_until - coalition.clock()) / 1_000_000 - HOUR_S)
    assert _tier(coalition, member_id, shop.currency).tier.name == "Silver"
    in_grace, _ = coalition.earn(shop, member_id, [1_000])
    assert (in_grace.pricing.points, in_grace.pricing.tier_name) == (12, "Silver")
    coalition.clock.advance(2 * HOUR_S)
    after = _tier(coalition, member_id, shop.currency)
    assert (after.tier.name, micros_from_timestamp(after.since_time)) == ("Base", valid_until)
    assert not after.HasField("valid_until_time") and after.keep_tier_needed_amount == 0
    base, _ = coalition.earn(shop, member_id, [10_000])
    assert (base.pricing.points, base.pricing.tier_name, base.pricing.tier_bonus_points) == (100, "Base", 0)


def test_quote_earn_and_earn_agree_on_the_tier_and_show_the_bonus_per_line(coalition):
    shop = _programme(coalition)
    _set(coalition, _definition(shop.currency))
    member_id, card = coalition.enroll()
    coalition.earn(shop, member_id, [10_000])  # 100 qualifying points: Silver
    lines = [
        pb.BasketLine(line_number=n + 1, sku=f"s{n}", category="grocery", quantity=1000, amount=amount)
        for n, amount in enumerate([1_001, 2_003, 999])
    ]
    by_card = pb.MemberIdentity(alias=pb.Alias(kind=pb.ALIAS_KIND_CARD, value=card))
    quote = coalition.call(
        "QuoteEarn", pb.QuoteEarnRequest(point_of_sale=shop.pos(), member=by_card, lines=lines), shop.key
    )
    earn = pb.EarnRequest(
        request_id=unique("e"), point_of_sale=shop.pos(), receipt_id=unique("r"), member=by_card, lines=lines
    )
    earned = coalition.call("Earn", earn, shop.key)
    # 40.03 exact points x 1.25 = 50.0375, rounded down once: 50, of which 40 base and 10 bonus.
    assert quote.pricing == earned.pricing
    assert (earned.pricing.points, earned.pricing.tier_bonus_points, earned.pricing.exact_points) == (50, 10, "40.03")
    assert [line.tier_bonus_points for line in earned.pricing.lines] == [3, 5, 2]
    assert sum(line.points for line in earned.pricing.lines) == 50
    assert _transfer(coalition, earned.earn_id).metadata.tier_bonus_points == 10
    assert coalition.call("Earn", earn, shop.key) == earned  # a retry answers the same
    anonymous = coalition.call("QuoteEarn", pb.QuoteEarnRequest(point_of_sale=shop.pos(), lines=lines), shop.key)
    assert (anonymous.pricing.points, anonymous.pricing.tier_name, anonymous.pricing.tier_multiplier) == (40, "", "1")


def test_a_return_reverses_its_lines_bonus_and_qualifying_points_without_a_downgrade_at_the_till(coalition):
    shop = _programme(coalition)
    _set(coalition, _definition(shop.currency))
    member_id, _ = coalition.enroll()
    _, upgrade_request = coalition.earn(shop, member_id, [6_000, 6_000])  # 120 base: Silver
    later, later_request = coalition.earn(shop, member_id, [4_000, 4_000])  # 80 base + 20 bonus
    assert [line.tier_bonus_points for line in later.pricing.lines] == [10, 10]
    back = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=later_request.receipt_id, line_numbers=[1]
    )
    returned = coalition.call("Return", back, shop.key)
    assert (returned.earned_points_reversed, returned.tier_bonus_points_due) == (50, 10)
    reversal = _transfer(coalition, f"return:{shop.partner_id}:{back.request_id}:1:earn")
    assert (reversal.amount, reversal.metadata.tier_bonus_points) == (50, 10)
    whole = pb.ReturnRequest(
        request_id=unique("ret"), point_of_sale=shop.pos(), receipt_id=upgrade_request.receipt_id, line_numbers=[1, 2]
    )
    assert coalition.call("Return", whole, shop.key).tier_bonus_points_due == 0
    # 120 + 80 - 40 - 120 = 40 qualifying points: below Silver's 100, and still Silver until the
    # evaluation at the end of this year plus the grace months.
    status = _tier(coalition, member_id, shop.currency)
    assert (status.tier.name, status.qualifying_amount, status.keep_tier_needed_amount) == ("Silver", 40, 60)
    now = coalition.clock()
    assert micros_from_timestamp(status.valid_until_time) == _end_of_year_plus(now, 1, 2)
    next_earn, _ = coalition.earn(shop, member_id, [1_000])
    assert (next_earn.pricing.points, next_earn.pricing.tier_name) == (12, "Silver")
    coalition.clock.advance((_end_of_year_plus(now, 1, 2) - coalition.clock()) / 1_000_000 + HOUR_S)
    assert _tier(coalition, member_id, shop.currency).tier.name == "Base"


def test_the_member_read_follows_the_balance_reads_rules(coalition):
    shop, rival = _programme(coalition), _programme(coalition)
    _set(coalition, _definition(shop.currency))
    member_id, _ = coalition.enroll()
    coalition.earn(shop, member_id, [5_000])
    own = _tier(coalition, member_id, shop.currency, shop.key)
    assert (own.member_id, own.tier.name, own.qualifying_amount, own.next_tier_needed_amount) == (
        member_id,
        "Base",
        50,
        50,
    )
    assert not own.HasField("since_time") and not own.HasField("valid_until_time")
    request = pb.GetMemberTierRequest(member=pb.MemberIdentity(member_id=member_id), currency_code=shop.currency)
    assert coalition.error("GetMemberTier", request, rival.key) == (Code.PERMISSION_DENIED, "OTHER_PARTNER_CURRENCY")
    assert not _tier(coalition, member_id, rival.currency, rival.key).has_tiers  # no definition
    unknown = pb.GetMemberTierRequest(member=pb.MemberIdentity(member_id="m-nobody"), currency_code=shop.currency)
    assert coalition.error("GetMemberTier", unknown, shop.key) == (Code.NOT_FOUND, "MEMBER_NOT_FOUND")
    listed = coalition.call("ListTierDefinitions", pb.ListTierDefinitionsRequest(), shop.key).definitions
    assert [definition.currency_code for definition in listed] == [shop.currency]
    other = pb.ListTierDefinitionsRequest(currency_code=shop.currency)
    assert coalition.error("ListTierDefinitions", other, rival.key) == (
        Code.PERMISSION_DENIED,
        "OTHER_PARTNER_CURRENCY",
    )


def test_the_operator_sets_definitions_once_per_effective_time_and_bad_ones_are_refused(coalition):
    shop = _programme(coalition)
    currency = shop.currency
    request = pb.SetTierDefinitionRequest(definition=_definition(currency))
    assert coalition.error("SetTierDefinition", request, shop.key) == (Code.PERMISSION_DENIED, "ADMIN_REQUIRED")
    with tls_channel(coalition.address, identity="pos-demo") as channel, pytest.raises(grpc.RpcError) as raised:
        partners_pb2_grpc.PartnersServiceStub(channel).SetTierDefinition(
            request, metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=10
        )
    assert error_info_of(raised.value).reason == "OPERATOR_CERTIFICATE_REQUIRED"
    past = _definition(currency, effective_time=timestamp_from_micros(coalition.clock() - HOUR_S * 1_000_000))
    bad = {
        "past": (past, "EFFECTIVE_TIME_IN_PAST", "definition.effective_time"),
        "not increasing": (
            _definition(currency, levels=(("Base", 0, "1"), ("Silver", 100, "1.25"), ("Gold", 100, "1.5"))),
            "INVALID_TIER_DEFINITION",
            "definition.levels.threshold",
        ),
        "multiplier below 1": (
            _definition(currency, levels=(("Base", 0, "1"), ("Silver", 100, "0.5"))),
            "INVALID_TIER_DEFINITION",
            "definition.levels.multiplier",
        ),
        "first level above 0": (
            _definition(currency, levels=(("Silver", 100, "1.25"),)),
            "INVALID_TIER_DEFINITION",
            "definition.levels",
        ),
        "not a decimal": (
            _definition(currency, levels=(("Base", 0, "one"),)),
            "INVALID_DECIMAL",
            "definition.levels.earn_multiplier",
        ),
        "no measure": (
            _definition(currency, measure=pb.TIER_MEASURE_UNSPECIFIED),
            "INVALID_TIER_DEFINITION",
            "definition.measure",
        ),
        "grace too long": (_definition(currency, grace=25), "INVALID_TIER_DEFINITION", "definition.grace_months"),
        "no levels": (_definition(currency, levels=()), "INVALID_TIER_DEFINITION", "definition.levels"),
    }
    for case, (definition, reason, field) in bad.items():
        with pytest.raises(grpc.RpcError) as refused:
            _set(coalition, definition)
        info = error_info_of(refused.value)
        assert (refused.value.code(), info.reason, info.metadata["field"]) == (Code.INVALID_ARGUMENT, reason, field), (
            case
        )
    unknown = _definition("NOSUCHCUR")
    assert coalition.error("SetTierDefinition", pb.SetTierDefinitionRequest(definition=unknown)) == (
        Code.NOT_FOUND,
        "CURRENCY_NOT_FOUND",
    )
    listed = pb.ListTierDefinitionsRequest(currency_code=currency)
    assert list(coalition.call("ListTierDefinitions", listed).definitions) == []  # nothing written
    future = _definition(currency, effective_time=timestamp_from_micros(coalition.clock() + 30 * 86_400_000_000))
    first = _set(coalition, future)
    again = _set(coalition, future)
    assert first.created and not again.created and again.definition == first.definition
    assert first.definition.levels[1].earn_multiplier == "1.25"
    future.levels[1].earn_multiplier = "1.3"
    assert coalition.error("SetTierDefinition", pb.SetTierDefinitionRequest(definition=future)) == (
        Code.ALREADY_EXISTS,
        "TIER_DEFINITION_EXISTS_WITH_DIFFERENT_CONTENT",
    )
    assert [d.effective_time for d in coalition.call("ListTierDefinitions", listed).definitions] == [
        first.definition.effective_time
    ]
    # Not in effect yet: the member earns without a tier.
    member_id, _ = coalition.enroll()
    earned, _ = coalition.earn(shop, member_id, [10_000])
    assert (earned.pricing.tier_name, earned.pricing.tier_multiplier) == ("", "1")


def test_concurrent_earns_of_one_member_count_every_qualifying_point_once(coalition):
    """24 tills earn 10 base points each for one member at once: every point counts, and exactly
    the earns decided after the 10th (which reached Silver's 100) carry Silver's bonus."""
    shop = _programme(coalition)
    _set(coalition, _definition(shop.currency))
    member_id, _ = coalition.enroll()
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda _: coalition.earn(shop, member_id, [1_000])[0], range(24)))
    tiers_priced = sorted(answer.pricing.tier_name for answer in answers)
    assert tiers_priced == ["Base"] * 10 + ["Silver"] * 14
    assert sum(answer.pricing.tier_bonus_points for answer in answers) == 14 * 2
    status = _tier(coalition, member_id, shop.currency)
    assert (status.tier.name, status.qualifying_amount) == ("Silver", 240)
    assert coalition.balance(member_id, shop.currency).posted == 10 * 10 + 14 * 12


def test_pts_has_tiers_too(coalition):
    """Last in the module: from here on PTS earns of this module's servers have tiers."""
    shop = coalition.register_partner()
    assert _set(coalition, _definition("PTS", grace=0, window=pb.TIER_WINDOW_ROLLING_12_MONTHS)).created
    member_id, _ = coalition.enroll()
    earned, _ = coalition.earn(shop, member_id, [20_000])  # 100 PTS at 0.5 per euro
    assert (earned.pricing.points, earned.pricing.tier_name) == (100, "Base")
    assert _tier(coalition, member_id, "PTS", shop.key).tier.name == "Silver"
    listed = coalition.call("ListTierDefinitions", pb.ListTierDefinitionsRequest(), shop.key).definitions
    assert {definition.currency_code for definition in listed} == {"PTS"}
    assert listed[-1].window == pb.TIER_WINDOW_ROLLING_12_MONTHS
