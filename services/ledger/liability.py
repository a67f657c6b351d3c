"""Use cases for finance: breakage per issuer in a window, and outstanding points by age and expiry month.

Both are aggregated by the database (lot_store), never lot by lot or transfer by transfer: the
answer's size depends on currencies, issuers and months, not on members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from services.common.db import Database
from services.common.errors import FailedPrecondition, InvalidArgument
from services.ledger import limits, lot_store, lots, store


@dataclass(frozen=True, slots=True)
class BreakageLine:
    currency_code: str
    issuer_id: str
    expired: int
    reinstated: int


def breakage_summary(database: Database, start_us: int, end_us: int) -> tuple[list[BreakageLine], int]:
    found, last_sequence = database.read(lambda c: lot_store.breakage_by_issuer(c, start_us, end_us))
    lines = [BreakageLine(code, issuer, expired, reinstated) for (code, issuer), (expired, reinstated) in found.items()]
    return sorted(lines, key=lambda line: (line.currency_code, line.issuer_id)), last_sequence


@dataclass(slots=True)
class ExpiryBucket:
    month: str  # "YYYY-MM"; empty for never and exempt
    key: int  # month index, or lot_store.EXPIRY_KEY_NEVER / EXPIRY_KEY_EXEMPT
    amount: int = 0
    inactivity_amount: int = 0


@dataclass(slots=True)
class CurrencyOutstanding:
    currency_code: str
    wallet_balance_total: int
    age_amounts: list[int] = field(default_factory=lambda: [0] * (len(lots.AGE_BUCKET_EDGES_MONTHS) + 1))
    expiry: dict[int, ExpiryBucket] = field(default_factory=dict)

    @property
    def open_lots_total(self) -> int:
        return sum(self.age_amounts)

    def expiry_buckets(self) -> list[ExpiryBucket]:
        """Months earliest first, then never, then exempt."""
        return sorted(self.expiry.values(), key=lambda b: (b.key < 0, -b.key if b.key < 0 else b.key))


@dataclass(frozen=True, slots=True)
class OutstandingSummary:
    as_of_us: int
    commit_sequence: int
    currencies: list[CurrencyOutstanding]


def outstanding_summary(
    database: Database, as_of_us: int | None, currency_code: str, zone: ZoneInfo
) -> OutstandingSummary:
    """Open lots as of a time (now when None), by age bucket and expiry month, per currency, with
    the member wallets' balance total at that time: they are equal when the lots are right."""

    def work(connection) -> OutstandingSummary:
        now_us = store.clock_now_us(connection)
        if as_of_us is not None and as_of_us > now_us:
            raise InvalidArgument(
                "AS_OF_IN_FUTURE", "as_of_time is after the ledger's clock; leave it unset for now", field="as_of_time"
            )
        at_us = now_us if as_of_us is None else as_of_us
        sequence = lot_store.sequence_at(connection, at_us, store.last_sequence(connection))
        span = lot_store.expiry_span(connection, sequence, currency_code)
        first_month, starts = lots.month_starts_us(*span, zone) if span is not None else (None, [])
        if len(starts) > limits.OUTSTANDING_MONTHS_MAX:
            raise FailedPrecondition(
                "EXPIRY_SPAN_TOO_WIDE",
                f"open lots expire across more than {limits.OUTSTANDING_MONTHS_MAX} months; ask per currency",
                months=len(starts),
            )
        edges = lots.age_bucket_edges_us(at_us, zone)
        groups = lot_store.outstanding_groups(connection, sequence, currency_code, edges, starts)
        totals = lot_store.wallet_totals_at(connection, at_us, sequence, currency_code)
        by_code: dict[str, CurrencyOutstanding] = {}
        for code in sorted(set(totals) | {group[0] for group in groups}):
            by_code[code] = CurrencyOutstanding(code, totals.get(code, 0))
        for code, age, key, inactivity, amount in groups:
            outstanding = by_code[code]
            outstanding.age_amounts[age] += amount
            month = lots.month_label(first_month, key) if key >= 0 and first_month is not None else ""
            bucket = outstanding.expiry.setdefault(key, ExpiryBucket(month, key))
            bucket.amount += amount
            bucket.inactivity_amount += amount if inactivity else 0
        return OutstandingSummary(at_us, sequence, list(by_code.values()))

    return database.read(work)
