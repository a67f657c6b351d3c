"""`make demo-lifecycle`: the points lifecycle (earn, notice, expiry, reinstatement, a tier upgrade) in seconds.

The running system's clock never moves, so this scenario brings its own: a private ledger and
partners pair on a temporary SQLite database with a simulated clock (services/simulation.py),
started and removed by this process. It never talks to `make run`'s servers.

Scenes are functions of one `Stage`. `run()` returns the key figures so a test can check them.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from coalition.ledger.v1 import ledger_pb2 as lpb
from coalition.partners.v1 import partners_pb2 as ppb
from services.common.auth import DEV_ADMIN_API_KEY
from services.partners.demo import DEMO_CARDS, DEMO_KEYS
from services.partners.model import breakage_account_id, wallet_account_id
from services.simulation import PrivateCoalition, start_private_coalition

DAY_US = 86_400_000_000
CURRENCY = "PTS"
POLICY_MONTHS = 36
PARTNER = "fresh-mart"
CALL_DEADLINE_SECONDS = 10
STREAM_DEADLINE_SECONDS = 5


@dataclass
class Figures:
    """What the story showed, for a reader and for the test (points in minor units, times in µs)."""

    earned: int = 0
    lot_id: str = ""
    first_expire_us: int = 0
    expiring_months: dict[str, int] = field(default_factory=dict)
    listed_expiring_soon: int = 0
    notice_amount: int = 0
    notice_expire_us: int = 0
    expired: int = 0
    balance_after_expiry: int = 0
    breakage_after_expiry: int = 0
    reinstated: int = 0
    balance_after_reinstatement: int = 0
    breakage_after_reinstatement: int = 0
    new_expire_us: int = 0
    tier_first_points: int = 0
    tier_after_first: str = ""
    tier_quote_points: int = 0
    tier_second_points: int = 0
    tier_second_bonus: int = 0


@dataclass
class Stage:
    """The private coalition, the member and what happened so far."""

    coalition: PrivateCoalition
    zone: ZoneInfo
    say: Callable[[str], None]
    card: str = DEMO_CARDS[0]
    member_id: str = ""
    figures: Figures = field(default_factory=Figures)

    @property
    def wallet(self) -> str:
        return wallet_account_id(CURRENCY, self.member_id)

    def pos(self, method: str, request):
        metadata = (("authorization", f"Bearer {DEMO_KEYS[PARTNER]}"), ("x-request-id", uuid.uuid4().hex))
        call = getattr(self.coalition.partners, method)
        return call(request, metadata=metadata, timeout=CALL_DEADLINE_SECONDS)

    def ledger(self, method: str, request):
        return getattr(self.coalition.ledger, method)(request, timeout=CALL_DEADLINE_SECONDS)

    def date(self, at_us: int) -> str:
        return datetime.datetime.fromtimestamp(at_us / 1_000_000, self.zone).strftime("%Y-%m-%d %H:%M")

    def last_day(self, expire_us: int) -> str:
        """The last day points are usable: a lot expiring at midnight lives through the day before."""
        return datetime.datetime.fromtimestamp((expire_us - 1) / 1_000_000, self.zone).strftime("%d %b %Y")

    def now(self) -> str:
        return self.date(self.coalition.clock())

    def pass_time(self, microseconds: int, why: str) -> None:
        self.coalition.clock.advance(microseconds)
        self.say(f"\n... {why}. Simulated date: {self.now()}")

    def balance(self, account_id: str) -> int:
        (found,) = self.ledger("GetBalances", lpb.GetBalancesRequest(account_ids=[account_id])).balances
        return found.posted

    def lots(self) -> lpb.ListLotsResponse:
        return self.ledger("ListLots", lpb.ListLotsRequest(account_id=self.wallet))


def _card(number: str) -> ppb.MemberIdentity:
    return ppb.MemberIdentity(alias=ppb.Alias(kind=ppb.ALIAS_KIND_CARD, value=number))


def policy_scene(stage: Stage) -> None:
    policy = lpb.ExpiryPolicy(currency_code=CURRENCY, kind=lpb.EXPIRY_POLICY_KIND_FIXED, months=POLICY_MONTHS)
    recorded = stage.ledger("SetExpiryPolicy", lpb.SetExpiryPolicyRequest(policy=policy)).policy
    stage.say(
        f"1. The operator sets a FIXED {recorded.months}-month expiry policy on {CURRENCY} "
        f"(notice period {recorded.notice_days} days), "
        f"effective {stage.date(recorded.effective_time.ToMicroseconds())}."
    )


def earn_scene(stage: Stage) -> None:
    basket = [
        ppb.BasketLine(line_number=1, sku="apples", category="fresh", quantity=2000, amount=1_250),
        ppb.BasketLine(line_number=2, sku="coffee", category="grocery", quantity=1000, amount=3_599),
    ]
    earned = stage.pos(
        "Earn",
        ppb.EarnRequest(
            request_id=f"lifecycle-{uuid.uuid4().hex[:12]}",
            point_of_sale=ppb.PointOfSale(store_id="fm-berlin-01", terminal_id="till-1"),
            receipt_id=f"receipt-{uuid.uuid4().hex[:12]}",
            member=_card(stage.card),
            lines=basket,
        ),
    )
    stage.member_id = earned.member_id
    (lot,) = stage.lots().lots
    figures = stage.figures
    figures.earned, figures.lot_id = earned.pricing.points, lot.lot_id
    figures.first_expire_us = lot.expire_time.ToMicroseconds()
    stage.say(f"2. Member {stage.member_id} (card {stage.card}) earns {figures.earned} {CURRENCY} at FreshMart.")
    stage.say(
        f"   The ledger opens a lot of {lot.open_amount} {CURRENCY} (lot {lot.lot_id}); "
        f"its points can be used through {stage.last_day(figures.first_expire_us)}."
    )
    _expiring_reads(stage, "3")


def _expiring_reads(stage: Stage, number: str) -> None:
    """The member-level read (points expiring per month) and the operator's expiring-soon listing."""
    read = stage.pos(
        "GetMemberExpiringPoints", ppb.GetMemberExpiringPointsRequest(member=_card(stage.card), currency_code=CURRENCY)
    )
    months = {month.month: month.amount for month in read.months if month.amount}
    shown = ", ".join(f"{month}: {amount}" for month, amount in months.items()) or "nothing"
    stage.say(f"{number}. The member's points expiring per month, next 12 months: {shown}.")
    listing = stage.ledger("ListExpiringSoon", lpb.ListExpiringSoonRequest(currency_code=CURRENCY))
    mine = [w for w in listing.wallets if w.account_id == stage.wallet]
    if mine:
        (wallet,) = mine
        stage.say(
            f"   Expiring-soon listing (next 30 days, for reminders): {wallet.owner_id}, {wallet.amount} {CURRENCY}, "
            f"first expiring {stage.date(wallet.first_expire_time.ToMicroseconds())}."
        )
    else:
        stage.say("   Expiring-soon listing (next 30 days, for reminders): the member is not on it.")
    stage.figures.expiring_months = months
    stage.figures.listed_expiring_soon = sum(w.amount for w in mine)


TIER_LEVELS = (("Base", 0, "1"), ("Silver", 100, "1.25"), ("Gold", 1_000, "1.5"))
TIER_BASKET_CENTS = 25_000  # EUR 250 of groceries: 125 PTS at FreshMart's 1 point per EUR 2


def _tier_basket() -> list[ppb.BasketLine]:
    return [
        ppb.BasketLine(line_number=1, sku="wine", category="grocery", quantity=1000, amount=TIER_BASKET_CENTS // 2),
        ppb.BasketLine(line_number=2, sku="cheese", category="grocery", quantity=1000, amount=TIER_BASKET_CENTS // 2),
    ]


def _tier_earn(stage: Stage, card: str) -> ppb.EarnPricing:
    return stage.pos(
        "Earn",
        ppb.EarnRequest(
            request_id=f"lifecycle-{uuid.uuid4().hex[:12]}",
            point_of_sale=ppb.PointOfSale(store_id="fm-berlin-01", terminal_id="till-2"),
            receipt_id=f"receipt-{uuid.uuid4().hex[:12]}",
            member=_card(card),
            lines=_tier_basket(),
        ),
    ).pricing


def tier_upgrade_scene(stage: Stage) -> None:
    """A member crosses the Silver threshold, is upgraded at once, and earns at x1.25 next."""
    figures, card = stage.figures, DEMO_CARDS[1]
    effective_us = stage.coalition.clock() + 1_000_000
    definition = ppb.TierDefinition(
        currency_code=CURRENCY,
        measure=ppb.TIER_MEASURE_QUALIFYING_POINTS,
        window=ppb.TIER_WINDOW_CALENDAR_YEAR,
        downgrade_grace_months=3,
        levels=[ppb.TierLevel(name=name, threshold=at, earn_multiplier=m) for name, at, m in TIER_LEVELS],
        effective_time=Timestamp(seconds=effective_us // 1_000_000, nanos=effective_us % 1_000_000 * 1000),
    )
    admin = (("authorization", f"Bearer {DEV_ADMIN_API_KEY}"),)
    stage.coalition.partners.SetTierDefinition(
        ppb.SetTierDefinitionRequest(definition=definition), metadata=admin, timeout=CALL_DEADLINE_SECONDS
    )
    stage.say(
        f"\n8. The operator defines {CURRENCY} tiers: "
        + ", ".join(f"{name} x{m} from {at:,} qualifying {CURRENCY}" for name, at, m in TIER_LEVELS)
        + " (calendar year, downgrades 3 months after the year that misses)."
    )
    stage.pass_time(60_000_000, "a minute later")
    first = _tier_earn(stage, card)
    tier = stage.pos("GetMemberTier", ppb.GetMemberTierRequest(member=_card(card), currency_code=CURRENCY))
    figures.tier_first_points, figures.tier_after_first = first.points, tier.tier.name
    stage.say(
        f"   Card {card} earns {first.points} {CURRENCY} on a EUR {TIER_BASKET_CENTS / 100:,.2f} basket at "
        f"tier {first.tier_name} (x{first.tier_multiplier}); those are qualifying points, so the member is "
        f"upgraded at once: {tier.tier.name} since {stage.date(tier.since_time.ToMicroseconds())}, valid until "
        f"{stage.date(tier.valid_until_time.ToMicroseconds())}; {tier.next_tier_needed_amount:,} more for "
        f"{tier.next_tier.name}."
    )
    quote = stage.pos(
        "QuoteEarn",
        ppb.QuoteEarnRequest(
            point_of_sale=ppb.PointOfSale(store_id="fm-berlin-01", terminal_id="till-2"),
            member=_card(card),
            lines=_tier_basket(),
        ),
    ).pricing
    second = _tier_earn(stage, card)
    figures.tier_quote_points, figures.tier_second_points = quote.points, second.points
    figures.tier_second_bonus = second.tier_bonus_points
    stage.say(
        f"   The same basket again: QuoteEarn says {quote.points} {CURRENCY}, Earn gives {second.points} "
        f"{CURRENCY} at {second.tier_name} x{second.tier_multiplier}, of which {second.tier_bonus_points} tier bonus "
        "(" + ", ".join(f"line {line.line_number}: +{line.tier_bonus_points}" for line in second.lines) + ")."
    )


def notice_scene(stage: Stage) -> None:
    # The background pass runs every minute and records a notice up to two minutes before the
    # notice period begins, so the expiry stays on its date. Here it runs on demand a minute before.
    until_notice = stage.figures.first_expire_us - 30 * DAY_US - 60_000_000 - stage.coalition.clock()
    stage.pass_time(until_notice, "Time passes: the points' 30-day notice period is about to begin")
    run = stage.ledger("RunExpiry", lpb.RunExpiryRequest())
    stage.say(
        f"4. The ledger's expiry pass (every minute in the background; on demand here) records "
        f"{run.notices_recorded} notice and expires nothing."
    )
    (notice,) = [n for n in _notices(stage) if n.account_id == stage.wallet]
    stage.figures.notice_amount = notice.amount
    stage.figures.notice_expire_us = notice.expire_time.ToMicroseconds()
    stage.say(
        f"   On the WatchExpiryNotices stream: notice #{notice.notice_sequence}: {notice.owner_id}, "
        f"{notice.amount} {notice.currency_code} of lot {notice.lot_id} "
        f"expire {stage.date(notice.expire_time.ToMicroseconds())} "
        f"(noticed {stage.date(notice.notice_time.ToMicroseconds())}). Partners follows it to send the reminder."
    )
    stage.pass_time(3_600_000_000, "An hour later")
    _expiring_reads(stage, "5")


def _notices(stage: Stage) -> list[lpb.ExpiryNotice]:
    call = stage.coalition.ledger.WatchExpiryNotices(
        lpb.WatchExpiryNoticesRequest(after_notice_sequence=0), timeout=STREAM_DEADLINE_SECONDS
    )
    try:
        return list(next(call).notices)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return []
        raise
    finally:
        call.cancel()


def expiry_scene(stage: Stage) -> None:
    until_after = stage.figures.notice_expire_us + DAY_US - stage.coalition.clock()
    stage.pass_time(until_after, f"Time passes: {POLICY_MONTHS} months since the earn, and a day more")
    run = stage.ledger("RunExpiry", lpb.RunExpiryRequest())
    figures = stage.figures
    figures.expired = run.amount_expired
    figures.balance_after_expiry = stage.balance(stage.wallet)
    figures.breakage_after_expiry = stage.balance(breakage_account_id(CURRENCY))
    stage.say(
        f"6. The expiry job posts {run.transfers_posted} EXPIRY transfer: {run.amount_expired} {CURRENCY} "
        f"from the member's wallet to the operator's breakage account."
    )
    stage.say(
        f"   Wallet: {figures.balance_after_expiry} {CURRENCY}; "
        f"breakage account: {figures.breakage_after_expiry} {CURRENCY}."
    )


def reinstatement_scene(stage: Stage) -> None:
    stage.pass_time(10 * DAY_US, "Ten days later the member calls; the operator reinstates within the 90-day window")
    entries = stage.ledger("ListAccountEntries", lpb.ListAccountEntriesRequest(account_id=stage.wallet)).entries
    (expiry,) = [entry.transfer for entry in entries if entry.transfer.code == lpb.TRANSFER_CODE_EXPIRY]
    reversal = lpb.TransferInput(
        id=f"reinstate-{uuid.uuid4().hex[:12]}",
        debit_account_id=expiry.credit_account_id,
        credit_account_id=expiry.debit_account_id,
        amount=expiry.amount,
        currency_code=CURRENCY,
        kind=lpb.TRANSFER_KIND_POSTED,
        code=lpb.TRANSFER_CODE_REVERSAL,
        reverses_transfer_id=expiry.id,
    )
    (result,) = stage.ledger("CreateTransfers", lpb.CreateTransfersRequest(transfers=[reversal])).results
    if result.status != lpb.ITEM_STATUS_CREATED:
        raise RuntimeError(f"the reinstatement was refused: {result}")
    (lot,) = stage.lots().lots
    figures = stage.figures
    figures.reinstated = expiry.amount
    figures.balance_after_reinstatement = stage.balance(stage.wallet)
    figures.breakage_after_reinstatement = stage.balance(breakage_account_id(CURRENCY))
    figures.new_expire_us = lot.expire_time.ToMicroseconds()
    stage.say(f"7. The operator posts a REVERSAL of the EXPIRY: {expiry.amount} {CURRENCY} come back.")
    stage.say(
        f"   The same lot ({lot.lot_id}) is open again with {lot.open_amount} {CURRENCY} and a new expiry: "
        f"usable through {stage.last_day(figures.new_expire_us)}."
    )
    stage.say(
        f"   Wallet: {figures.balance_after_reinstatement} {CURRENCY}; "
        f"breakage account: {figures.breakage_after_reinstatement} {CURRENCY} (breakage reversed)."
    )


SCENES: tuple[Callable[[Stage], None], ...] = (
    policy_scene,
    earn_scene,
    notice_scene,
    expiry_scene,
    reinstatement_scene,
    tier_upgrade_scene,  # last: another member, so the expiry story's figures stay its own
)


def run(say: Callable[[str], None] = print) -> Figures:
    coalition = start_private_coalition()
    try:
        stage = Stage(coalition, ZoneInfo(coalition.time_zone), say)
        say("")
        say("Points lifecycle demo: earn, notice, expiry, reinstatement, tier upgrade")
        say("=" * 60)
        say(
            "This scenario runs its OWN PRIVATE ledger and partners servers on a temporary SQLite database\n"
            f"({coalition.directory}) with a SIMULATED CLOCK that it moves forward by months.\n"
            "It does not touch `make run`'s servers or data; their clocks never move."
        )
        say(f"\nSimulated date: {stage.now()}")
        for scene in SCENES:
            scene(stage)
        say("\nDone. The private servers stop and their temporary database is deleted.\n")
        return stage.figures
    finally:
        coalition.close()


def main() -> None:
    from services.common.logs import configure_logging

    configure_logging("console", "error")  # the story is the output
    run()


if __name__ == "__main__":
    main()
