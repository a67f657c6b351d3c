"""Finance reads of the ledger (DOMAIN.md "Expiry", "Breakage"): breakage per issuer in a window,
and outstanding points by age and expiry month, over gRPC on SQLite and PostgreSQL with a clock
the test moves. The bucketing rules are checked against a brute-force definition first."""

from __future__ import annotations

import bisect
import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, literal, select

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.errors import error_info_of
from services.ledger import lot_store, lots
from tests.ledger.helpers import CREDIT, TIMEOUT, account, create_accounts, posted, unique
from tests.ledger.test_expiry import DAY_US, FIXED, INACTIVITY, MONTH_US, Books
from tests.support.tls import channel as tls_channel

ZONE = ZoneInfo("Europe/Amsterdam")
NONE = pb.EXPIRY_POLICY_KIND_NONE
MONTH_KIND = pb.EXPIRY_BUCKET_KIND_MONTH
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
instants = st.integers(min_value=0, max_value=4_000_000_000 * 1_000_000)


def _age_in_months(credited_us: int, as_of_us: int) -> int:
    """Brute force: the most whole calendar months k with add_months(credit day, k) <= as_of's day."""
    credited, today = lots.local_date(credited_us, ZONE), lots.local_date(as_of_us, ZONE)
    months = 0
    while lots.add_months(credited, months + 1) <= today:
        months += 1
    return months


@settings(max_examples=400, deadline=None)
@given(credited=instants, age_us=st.integers(min_value=0, max_value=50 * 366 * DAY_US))
def test_age_buckets_follow_calendar_months_as_expiry_does(credited, age_us):
    as_of = credited + age_us
    months = _age_in_months(credited, as_of)
    expected = sum(1 for edge in lots.AGE_BUCKET_EDGES_MONTHS if months >= edge)
    assert lots.age_bucket(credited, as_of, ZONE) == expected


@pytest.mark.parametrize(
    ("credited", "as_of", "bucket"),
    [
        ("2026-01-31", "2026-04-30", 1),  # 31 Jan + 3 months is 30 Apr (clamped): 3 months old
        ("2026-01-31", "2026-04-29", 0),
        ("2026-02-28", "2026-05-27", 0),
        ("2026-02-28", "2026-05-28", 1),
        ("2025-03-15", "2026-03-15", 3),  # 12 months to the day
        ("2023-03-15", "2026-03-14", 4),  # one day short of 36 months
        ("2023-03-15", "2026-03-15", 5),
    ],
)
def test_age_bucket_table(credited, as_of, bucket):
    def noon(day: str) -> int:
        moment = datetime.datetime.combine(datetime.date.fromisoformat(day), datetime.time(12), ZONE)
        return int(moment.timestamp() * 1_000_000)

    assert lots.age_bucket(noon(credited), noon(as_of), ZONE) == bucket


def test_age_bucket_edges_of_an_as_of_time_in_the_first_years_of_the_calendar_stop_at_year_one():
    """Found by the fuzz: 36 months before 0001-01-01 is no date; no credit can be older, so the
    edges that far back are year 1's start and every credit is in a younger bucket."""
    as_of = int(datetime.datetime(1, 1, 1, tzinfo=datetime.UTC).timestamp() * 1_000_000)
    edges = lots.age_bucket_edges_us(as_of, ZONE)
    assert edges == sorted(edges, reverse=True) and edges[-1] == lots.EARLIEST_US
    assert lots.age_bucket(as_of, as_of, ZONE) == 0
    march_year_4 = int(datetime.datetime(4, 3, 15, 12, tzinfo=ZONE).timestamp() * 1_000_000)
    assert lots.age_bucket(lots.EARLIEST_US, march_year_4, ZONE) == 5  # 36 months of year 1..4 exist


@settings(max_examples=60, deadline=None)
@given(
    first=instants,
    months=st.integers(min_value=1, max_value=700),
    offsets=st.lists(st.floats(min_value=0, max_value=0.999999), min_size=1, max_size=20),
)
def test_the_sql_month_index_agrees_with_the_calendar(first, months, offsets):
    """The CASE tree the database evaluates puts each instant in its calendar month (coalition zone)."""
    last = first + months * 31 * DAY_US
    first_month, starts = lots.month_starts_us(first, last, ZONE)
    values = [int(first + (starts[-1] - 1 - first) * offset) for offset in offsets]
    engine = create_engine("sqlite://")
    with engine.connect() as connection:
        for value in values:
            index = connection.execute(select(lot_store.index_expression(literal(value), starts))).scalar_one()
            assert index == bisect.bisect_right(starts, value) - 1
            label = lots.local_date(value, ZONE).strftime("%Y-%m")
            assert lots.month_label(first_month, index) == label
    engine.dispose()


# ---------------------------------------------------------------- over gRPC


def _outstanding(ledger, currency, as_of: Timestamp | None = None) -> tuple[pb.CurrencyOutstanding, Timestamp]:
    request = pb.GetOutstandingSummaryRequest(currency_code=currency)
    if as_of is not None:
        request.as_of_time.CopyFrom(as_of)
    response = ledger.GetOutstandingSummary(request, timeout=TIMEOUT)
    (found,) = response.currencies
    return found, response.as_of_time


def _month_of(expire_time: Timestamp) -> str:
    return lots.local_date(expire_time.ToMicroseconds() - 1, ZONE).strftime("%Y-%m")


def test_outstanding_points_by_age_and_expiry_month_sum_to_the_wallets_now_and_as_of_a_past_time(operator, clock):
    books = Books(operator, FIXED, 48)
    wallet = books.wallet()
    books.earn(wallet, 1000)  # 40 (31-day) months old at the end
    clock.advance(26 * MONTH_US)
    books.earn(wallet, 200)  # 14 months old
    clock.advance(10 * MONTH_US)
    books.earn(wallet, 30)  # 4 months old
    clock.advance(4 * MONTH_US)
    books.earn(wallet, 4)
    books.redeem(wallet, 500)  # soonest-expiring first: 500 of the oldest lot
    exempt_wallet = unique("wallet")
    create_accounts(
        operator,
        account(exempt_wallet, CREDIT, no_overdraft=True, currency=books.currency, kind="member_wallet", owner="vip"),
    )
    books.earn(exempt_wallet, 7)
    operator.SetExpiryExemption(pb.SetExpiryExemptionRequest(owner_id="vip", exempt=True), timeout=TIMEOUT)

    found, as_of = _outstanding(operator, books.currency)
    assert [(b.age_months_min, b.age_months_max) for b in found.age_buckets] == [
        (0, 3),
        (3, 6),
        (6, 12),
        (12, 24),
        (24, 36),
        (36, 0),
    ]
    assert [b.amount for b in found.age_buckets] == [4 + 7, 30, 0, 200, 0, 500]
    expected_months: dict[str, int] = {}
    for lot in books.lots(wallet).lots:
        expected_months[_month_of(lot.expire_time)] = (
            expected_months.get(_month_of(lot.expire_time), 0) + lot.open_amount
        )
    months = {b.month: b.amount for b in found.expiry_buckets if b.kind == MONTH_KIND}
    assert months == expected_months
    assert [(b.kind, b.amount) for b in found.expiry_buckets if b.kind != MONTH_KIND] == [
        (pb.EXPIRY_BUCKET_KIND_EXEMPT, 7)
    ]
    assert found.open_lots_total == found.wallet_balance_total == books.balance(wallet) + books.balance(exempt_wallet)
    assert found.open_lots_total == 1234 - 500 + 7

    # Later activity does not change the figures as of that time: amounts and ages are rebuilt
    # from the draws and commit times.
    clock.advance(MONTH_US)
    books.redeem(wallet, 600)
    books.earn(wallet, 11)
    then, then_as_of = _outstanding(operator, books.currency, as_of)
    assert then_as_of == as_of
    assert [b.amount for b in then.age_buckets] == [b.amount for b in found.age_buckets]
    assert (then.open_lots_total, then.wallet_balance_total) == (found.open_lots_total, found.wallet_balance_total)
    now, _ = _outstanding(operator, books.currency)
    assert now.open_lots_total == now.wallet_balance_total == found.open_lots_total - 600 + 11


def test_never_expiring_and_inactivity_points_have_their_own_rows(operator, clock):
    never = Books(operator, NONE, 0)
    wallet = never.wallet()
    never.earn(wallet, 40)
    found, _ = _outstanding(operator, never.currency)
    assert [(b.kind, b.month, b.amount) for b in found.expiry_buckets] == [(pb.EXPIRY_BUCKET_KIND_NEVER, "", 40)]

    quiet = Books(operator, INACTIVITY, 24)
    wallet = quiet.wallet()
    quiet.earn(wallet, 25)
    (lot,) = quiet.lots(wallet).lots
    found, _ = _outstanding(operator, quiet.currency)
    (bucket,) = found.expiry_buckets
    deadline = quiet.lots(wallet).inactivity_expire_time
    assert (bucket.kind, bucket.month, bucket.amount, bucket.inactivity_amount) == (
        MONTH_KIND,
        _month_of(deadline),
        25,
        25,
    )
    assert lot.open_amount == found.open_lots_total == found.wallet_balance_total


def test_every_currency_is_listed_and_a_future_time_or_a_partner_caller_is_refused(operator, ledger_server):
    first, second = Books(operator, FIXED, 12), Books(operator, NONE, 0)
    first.earn(first.wallet(), 3)
    second.earn(second.wallet(), 5)
    response = operator.GetOutstandingSummary(pb.GetOutstandingSummaryRequest(), timeout=TIMEOUT)
    totals = {c.currency_code: (c.open_lots_total, c.wallet_balance_total) for c in response.currencies}
    assert totals == {first.currency: (3, 3), second.currency: (5, 5)}
    future = Timestamp()
    future.FromMicroseconds(response.as_of_time.ToMicroseconds() + 3_600_000_000)
    with pytest.raises(grpc.RpcError) as refused:
        operator.GetOutstandingSummary(pb.GetOutstandingSummaryRequest(as_of_time=future), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(refused.value).reason == "AS_OF_IN_FUTURE"
    earliest = Timestamp(seconds=-62_135_596_800)  # 0001-01-01T00:00:00Z: nothing outstanding yet
    empty = operator.GetOutstandingSummary(pb.GetOutstandingSummaryRequest(as_of_time=earliest), timeout=TIMEOUT)
    assert all(c.open_lots_total == c.wallet_balance_total == 0 for c in empty.currencies)

    with tls_channel(ledger_server.address, "partners") as channel:
        partners = ledger_pb2_grpc.LedgerServiceStub(channel)
        for call, request in (
            (partners.GetOutstandingSummary, pb.GetOutstandingSummaryRequest()),
            (partners.GetBreakageSummary, pb.GetBreakageSummaryRequest()),
        ):
            with pytest.raises(grpc.RpcError) as denied:
                call(request, timeout=TIMEOUT)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with tls_channel(ledger_server.address, "settlement") as channel:
        settlement = ledger_pb2_grpc.LedgerServiceStub(channel)
        assert settlement.GetOutstandingSummary(pb.GetOutstandingSummaryRequest(), timeout=TIMEOUT).currencies


def _expiry_of(ledger, wallet_id: str) -> pb.Transfer:
    entries = ledger.ListAccountEntries(pb.ListAccountEntriesRequest(account_id=wallet_id), timeout=TIMEOUT).entries
    (expiry,) = [e.transfer for e in entries if e.transfer.code == pb.TRANSFER_CODE_EXPIRY]
    return expiry


def _breakage(ledger, start: Timestamp, end: Timestamp) -> dict[tuple[str, str], tuple[int, int]]:
    response = ledger.GetBreakageSummary(pb.GetBreakageSummaryRequest(start_time=start, end_time=end), timeout=TIMEOUT)
    return {(line.currency_code, line.issuer_id): (line.expired, line.reinstated) for line in response.lines}


def test_breakage_is_summed_per_issuer_and_a_reinstatement_counts_for_the_issuer_of_its_expiry(operator, clock):
    books = Books(operator, FIXED, 1)
    other_issuance = unique("issuance")
    create_accounts(
        operator,
        account(other_issuance, pb.ACCOUNT_SIDE_DEBIT, currency=books.currency, kind="partner_issuance", owner="p2"),
    )
    first, second = books.wallet(), books.wallet()
    start = Timestamp()
    start.FromMicroseconds(0)
    books.earn(first, 100)
    books.post(posted(unique("earn"), other_issuance, second, 40, currency=books.currency))
    clock.advance(3 * DAY_US)
    assert books.run().notices_recorded == 2  # the expiry pass gives notice first (WatchExpiryNotices)
    clock.advance(3 * MONTH_US - 3 * DAY_US)
    assert books.run().amount_expired == 140
    expiry = _expiry_of(operator, first)
    assert expiry.metadata.partner_id == "p1"
    clock.advance(DAY_US)
    # The operator reinstates 30 and names another partner in the reversal: it still counts for p1.
    reinstatement = posted(
        unique("reinstate"),
        books.breakage,
        first,
        30,
        code=pb.TRANSFER_CODE_REVERSAL,
        currency=books.currency,
        reverses_transfer_id=expiry.id,
        metadata=pb.TransferMetadata(partner_id="p2"),
    )
    (result,) = books.post(reinstatement).results
    end = Timestamp()
    end.FromMicroseconds(result.transfer.commit_time.ToMicroseconds() + 1)
    assert _breakage(operator, start, end) == {(books.currency, "p1"): (100, 30), (books.currency, "p2"): (40, 0)}
    only_reinstatement = _breakage(operator, result.transfer.commit_time, end)
    assert only_reinstatement == {(books.currency, "p1"): (0, 30)}
    assert _breakage(operator, start, expiry.commit_time) == {}
    with pytest.raises(grpc.RpcError) as refused:
        operator.GetBreakageSummary(pb.GetBreakageSummaryRequest(start_time=end, end_time=start), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
