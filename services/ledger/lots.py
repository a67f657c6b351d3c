"""Lots: the points credited to a member wallet at one time, each with its expiry.

Plain Python, no SQL. A batch's postings are decided first (balances, holds, idempotency);
this module then follows the committed postings in order and keeps each tracked wallet's lots
in step, so that the open lots of a wallet always sum to its posted balance:

- a credit opens a lot, whose expiry its currency's policy at commit time decides (a policy
  change never touches lots already open); a credit that reverses a debit of the wallet
  restores the lots that debit drew from instead, last drawn first;
- a debit draws from open lots, soonest-expiring first (never-expiring and inactivity lots
  last), oldest first among equals; an expiry draws from the lot it expires;
- every draw and restore is recorded, so a later reversal knows what to restore.

Only member wallets that may never be overdrawn are tracked: lots cannot be negative.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from services.ledger.model import Account, Kind, Posting, Side

MEMBER_WALLET = "member_wallet"
NOTICE_DAYS_DEFAULT = 30
MONTHS_MAX = 600
US_PER_DAY = 86_400_000_000
_NEVER = 2**62


@dataclass(frozen=True, slots=True)
class LotRules:
    """The coalition's settings for lots: its time zone (months and days) and the reinstatement window."""

    zone: ZoneInfo
    reinstatement_window_us: int = 90 * 86_400_000_000


DEFAULT_RULES = LotRules(ZoneInfo("Europe/Amsterdam"))


class PolicyKind(enum.IntEnum):
    NONE = 1
    FIXED = 2
    INACTIVITY = 3


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    currency_code: str
    effective_from_us: int
    kind: PolicyKind
    months: int = 0
    sweep_month: int = 0
    sweep_day: int = 0
    notice_days: int = NOTICE_DAYS_DEFAULT
    created_at_us: int = 0

    @property
    def notice_us(self) -> int:
        return self.notice_days * US_PER_DAY


NO_POLICY = ExpiryPolicy("", 0, PolicyKind.NONE)


@dataclass(slots=True)
class Lot:
    account_id: str
    lot_id: str
    credited_at_us: int
    expires_at_us: int | None  # FIXED: when it expires, the notice period respected; else None
    amount: int
    open_amount: int
    policy_kind: PolicyKind
    months: int = 0  # INACTIVITY: the wallet's quiet months after which it expires
    notice_days: int = NOTICE_DAYS_DEFAULT
    issuer_id: str = ""  # who put the points into circulation (the credit's debit owner)
    expiry_round: int = 0  # expiries drawn from it so far: a restored lot expires again under a new id

    def order_key(self) -> tuple[int, int, str]:
        return (self.expires_at_us if self.expires_at_us is not None else _NEVER, self.credited_at_us, self.lot_id)


@dataclass(frozen=True, slots=True)
class Draw:
    """`amount` taken from a lot by a transfer (negative: given back by a reversal of `restores`)."""

    transfer_id: str
    account_id: str
    lot_id: str
    amount: int
    restores_transfer_id: str = ""


@dataclass(slots=True)
class LotState:
    """What the batch read of the tracked wallets it touches, and what it changed."""

    zone: ZoneInfo
    policies: dict[str, list[ExpiryPolicy]]  # currency -> versions, oldest first
    lots: dict[tuple[str, str], Lot]  # (account, lot id) -> lot: open lots, and lots draws name
    draws: dict[str, list[Draw]]  # transfer id -> its draws and restores (of the reversed transfers)
    new_lots: list[Lot] = field(default_factory=list)
    changed: set[tuple[str, str]] = field(default_factory=set)
    new_draws: list[Draw] = field(default_factory=list)
    active_wallets: dict[str, int] = field(default_factory=dict)  # account -> last qualifying activity
    currencies: dict[str, str] = field(default_factory=dict)  # tracked account -> its currency
    reinstated: set[str] = field(default_factory=set)  # EXPIRY transfers whose reversal renews lots


def is_tracked(account: Account) -> bool:
    return account.kind == MEMBER_WALLET and account.no_overdraft and account.normal_side is Side.CREDIT


def policy_at(policies: list[ExpiryPolicy], at_us: int) -> ExpiryPolicy:
    current = NO_POLICY
    for policy in policies:
        if policy.effective_from_us <= at_us:
            current = policy
    return current


def _end_of_day_us(day: datetime.date, zone: ZoneInfo) -> int:
    """The first instant of the next day in the coalition's zone: a lot lives through its last day."""
    following = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), zone)
    return int(following.timestamp() * 1_000_000)


def add_months(day: datetime.date, months: int) -> datetime.date:
    """Calendar months, the day clamped to the month's length (31 Jan + 1 month = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return datetime.date(year, month, min(day.day, _month_length(year, month)))


def _month_length(year: int, month: int) -> int:
    following = datetime.date(year + month // 12, month % 12 + 1, 1)
    return (following - datetime.timedelta(days=1)).day


def local_date(at_us: int, zone: ZoneInfo) -> datetime.date:
    return datetime.datetime.fromtimestamp(at_us / 1_000_000, zone).date()


def fixed_expiry_us(policy: ExpiryPolicy, credited_at_us: int, zone: ZoneInfo) -> int:
    """End of the day `months` after the credit (or of the first sweep day on or after it), and
    never before the points were listed as expiring soon for the whole notice period."""
    last_day = add_months(local_date(credited_at_us, zone), policy.months)
    if policy.sweep_month:
        sweep = _sweep_day(policy, last_day.year)
        last_day = sweep if sweep >= last_day else _sweep_day(policy, last_day.year + 1)
    return max(_end_of_day_us(last_day, zone), credited_at_us + policy.notice_us)


def _sweep_day(policy: ExpiryPolicy, year: int) -> datetime.date:
    return datetime.date(year, policy.sweep_month, min(policy.sweep_day, _month_length(year, policy.sweep_month)))


def inactivity_expiry_us(lot: Lot, last_activity_us: int, zone: ZoneInfo) -> int:
    """An INACTIVITY lot expires at the end of the day `months` after the wallet's last activity."""
    deadline = _end_of_day_us(add_months(local_date(last_activity_us, zone), lot.months), zone)
    return max(deadline, lot.credited_at_us + lot.notice_days * US_PER_DAY)


def open_lot(state: LotState, account: Account, lot_id: str, amount: int, at_us: int, issuer_id: str) -> Lot:
    policy = policy_at(state.policies.get(account.currency_code, []), at_us)
    expires = fixed_expiry_us(policy, at_us, state.zone) if policy.kind is PolicyKind.FIXED else None
    lot = Lot(
        account_id=account.id,
        lot_id=lot_id,
        credited_at_us=at_us,
        expires_at_us=expires,
        amount=amount,
        open_amount=amount,
        policy_kind=policy.kind,
        months=policy.months if policy.kind is PolicyKind.INACTIVITY else 0,
        notice_days=policy.notice_days,
        issuer_id=issuer_id,
    )
    state.lots[(account.id, lot_id)] = lot
    state.new_lots.append(lot)
    return lot


def open_lots_in_order(state: LotState, account_id: str) -> list[Lot]:
    return sorted(
        (lot for (owner, _), lot in state.lots.items() if owner == account_id and lot.open_amount > 0),
        key=Lot.order_key,
    )


class LotsShort(Exception):
    """A debit larger than the wallet's open lots: the lots and the balance disagree."""


def draw(state: LotState, transfer_id: str, account_id: str, amount: int, lot_id: str = "") -> None:
    """Take `amount` from the wallet: from one lot when named (an expiry), else soonest-expiring first."""
    lots = [state.lots[(account_id, lot_id)]] if lot_id else open_lots_in_order(state, account_id)
    if lot_id:
        lots[0].expiry_round += 1
    remaining = amount
    for lot in lots:
        if remaining == 0:
            break
        taken = min(lot.open_amount, remaining)
        if taken == 0:
            continue
        lot.open_amount -= taken
        remaining -= taken
        state.changed.add((account_id, lot.lot_id))
        _record(state, Draw(transfer_id, account_id, lot.lot_id, taken))
    if remaining:
        raise LotsShort(f"{account_id}: {remaining} more than its open lots for {transfer_id}")


def restore(
    state: LotState, transfer_id: str, account_id: str, amount: int, original_id: str, renew_at_us: int | None = None
) -> int:
    """Give back what `original_id` drew from the wallet, last drawn first; returns what is left over.

    With `renew_at_us` (a reinstated expiry) the lots given back take a new expiry, as if credited then.
    """
    remaining = amount
    net: dict[str, int] = {}
    order: list[str] = []
    for item in state.draws.get(original_id, []):
        if item.account_id != account_id:
            continue
        if item.lot_id not in net:
            order.append(item.lot_id)
        net[item.lot_id] = net.get(item.lot_id, 0) + item.amount
    # Debits draw soonest-expiring first, so the last drawn is the latest in that order.
    order.sort(key=lambda lot_id: state.lots[(account_id, lot_id)].order_key(), reverse=True)
    for lot_id in order:
        if remaining == 0:
            break
        given = min(net[lot_id], remaining)
        if given <= 0:
            continue
        lot = state.lots[(account_id, lot_id)]
        lot.open_amount += given
        remaining -= given
        if renew_at_us is not None:
            _renew(state, lot, renew_at_us)
        state.changed.add((account_id, lot_id))
        _record(state, Draw(transfer_id, account_id, lot_id, -given, restores_transfer_id=original_id))
    return remaining


def _renew(state: LotState, lot: Lot, at_us: int) -> None:
    currency = state.currencies[lot.account_id]
    policy = policy_at(state.policies.get(currency, []), at_us)
    lot.policy_kind = policy.kind
    lot.expires_at_us = fixed_expiry_us(policy, at_us, state.zone) if policy.kind is PolicyKind.FIXED else None
    lot.months = policy.months if policy.kind is PolicyKind.INACTIVITY else 0
    lot.notice_days = policy.notice_days
    lot.credited_at_us = max(lot.credited_at_us, at_us) if policy.kind is PolicyKind.INACTIVITY else lot.credited_at_us


def _record(state: LotState, item: Draw) -> None:
    state.new_draws.append(item)
    state.draws.setdefault(item.transfer_id, []).append(item)
    if item.restores_transfer_id:
        state.draws.setdefault(item.restores_transfer_id, []).append(item)


QUALIFYING_CODES = frozenset({1, 2, 4})  # EARN, REDEEM, CONVERSION (ledger_pb2.TransferCode)


def follow(
    state: LotState,
    postings: Iterable[Posting],
    accounts: dict[str, Account],
    expiry_targets: dict[str, str] | None = None,
) -> None:
    """Keep the lots of every tracked wallet in step with the batch's committed postings."""
    targets = expiry_targets or {}
    for posting in postings:
        transfer = posting.transfer
        amount = posting.posted_amount
        if amount <= 0 or transfer.kind not in (Kind.POSTED, Kind.POST_PENDING):
            continue
        debit, credit = accounts[transfer.debit_account_id], accounts[transfer.credit_account_id]
        at_us = transfer.committed_at_us
        if is_tracked(debit):
            draw(state, transfer.id, debit.id, amount, targets.get(transfer.id, ""))
            if transfer.code in QUALIFYING_CODES:
                state.active_wallets[debit.id] = at_us
        if is_tracked(credit):
            left = amount
            if transfer.reverses_transfer_id:
                renew = at_us if transfer.reverses_transfer_id in state.reinstated else None
                left = restore(state, transfer.id, credit.id, amount, transfer.reverses_transfer_id, renew)
                if renew is not None:  # reinstated points start a new quiet period too
                    state.active_wallets[credit.id] = at_us
            if left:
                open_lot(state, credit, transfer.id, left, at_us, debit.owner_id)
            if transfer.code in QUALIFYING_CODES:
                state.active_wallets[credit.id] = at_us


def expiring_by_month(
    lots: Iterable[Lot], last_activity_us: int | None, now_us: int, zone: ZoneInfo, notice_from_us: int | None = None
) -> list[tuple[str, int]]:
    """Open points expiring in each of the 12 calendar months from now's, in the coalition's zone."""
    first = local_date(now_us, zone).replace(day=1)
    months = [add_months(first, offset) for offset in range(12)]
    totals = {month.strftime("%Y-%m"): 0 for month in months}
    for lot in lots:
        expires = lot_expiry_us(lot, last_activity_us, zone, notice_from_us)
        if expires is None or lot.open_amount <= 0:
            continue
        # A lot expiring at midnight lived through the day before: that day's month is its month.
        month = local_date(expires - 1, zone).strftime("%Y-%m")
        if month in totals:
            totals[month] += lot.open_amount
        elif expires <= now_us:  # already due, not yet swept: it expires this month
            totals[months[0].strftime("%Y-%m")] += lot.open_amount
    return list(totals.items())


def lot_expiry_us(
    lot: Lot, last_activity_us: int | None, zone: ZoneInfo, notice_from_us: int | None = None
) -> int | None:
    """When the lot expires; with `notice_from_us` (an exemption ended then) never before a full
    notice period after it, since nothing of an exempt owner was ever listed as expiring."""
    if lot.policy_kind is PolicyKind.FIXED:
        expires = lot.expires_at_us
    elif lot.policy_kind is PolicyKind.INACTIVITY:  # a wallet never active since: quiet from the credit
        expires = inactivity_expiry_us(lot, last_activity_us or lot.credited_at_us, zone)
    else:
        return None
    if notice_from_us is not None and expires is not None:
        expires = max(expires, notice_from_us + lot.notice_days * US_PER_DAY)
    return expires


# ---------------------------------------------------------------- outstanding points by age and expiry month

# Finance's age buckets (IFRS 15 breakage estimates), in calendar months since the credit:
# 0001-01-01T00:00:00Z, the earliest time a request may name (services/common/timeconv.py).
EARLIEST_US = -62_135_596_800 * 1_000_000
# 0-3, 3-6, 6-12, 12-24, 24-36 and 36+. The one place they are set; readers get them in answers.
AGE_BUCKET_EDGES_MONTHS = (3, 6, 12, 24, 36)


def young_from_us(as_of_us: int, months: int, zone: ZoneInfo) -> int:
    """The first instant whose credits are younger than `months` calendar months at `as_of_us`.

    Points credited on local day D are `months` old once add_months(D, months) is on or before
    as_of's local day (the same calendar arithmetic as a FIXED lot's expiry). add_months clamps
    the day, so when as_of is on the last day of its month, or past the length of the month
    `months` back, the whole of that earlier month is old enough. When `months` back is before
    year 1 (an as-of time in years 1..3), no credit can be that old: the edge is year 1's start."""
    today = local_date(as_of_us, zone)
    if today.year * 12 + today.month - 13 < months:
        return EARLIEST_US
    back = add_months(today.replace(day=1), -months)
    back_length = _month_length(back.year, back.month)
    if today.day >= back_length or today.day == _month_length(today.year, today.month):
        oldest = back.replace(day=back_length)
    else:
        oldest = back.replace(day=today.day)
    return _end_of_day_us(oldest, zone)


def age_bucket_edges_us(as_of_us: int, zone: ZoneInfo) -> list[int]:
    """Per edge of AGE_BUCKET_EDGES_MONTHS, the first instant younger than it (latest first)."""
    return [young_from_us(as_of_us, months, zone) for months in AGE_BUCKET_EDGES_MONTHS]


def age_bucket(credited_at_us: int, as_of_us: int, zone: ZoneInfo) -> int:
    """Index of the age bucket of points credited at `credited_at_us` (0: youngest)."""
    for index, edge in enumerate(age_bucket_edges_us(as_of_us, zone)):
        if credited_at_us >= edge:
            return index
    return len(AGE_BUCKET_EDGES_MONTHS)


def age_bucket_bounds() -> list[tuple[int, int]]:
    """(months_min, months_max) per bucket; months_max 0 for the last (no upper bound)."""
    edges = (0, *AGE_BUCKET_EDGES_MONTHS)
    return [(edges[i], edges[i + 1] if i + 1 < len(edges) else 0) for i in range(len(edges))]


def month_start_us(month: datetime.date, zone: ZoneInfo) -> int:
    return int(datetime.datetime.combine(month.replace(day=1), datetime.time(), zone).timestamp() * 1_000_000)


def month_starts_us(first_us: int, last_us: int, zone: ZoneInfo) -> tuple[datetime.date, list[int]]:
    """The calendar months (in `zone`) from first_us's through last_us's: (the first month, the
    start instant of each month and of the month after the last), so that month i holds
    [starts[i], starts[i + 1])."""
    first = local_date(first_us, zone).replace(day=1)
    last = local_date(last_us, zone).replace(day=1)
    count = (last.year - first.year) * 12 + last.month - first.month + 1
    return first, [month_start_us(add_months(first, index), zone) for index in range(count + 1)]


def month_label(first: datetime.date, index: int) -> str:
    """ "YYYY-MM" of the month `index` months after `first`."""
    return add_months(first, index).strftime("%Y-%m")
