"""Expiry notices (WatchExpiryNotices) over gRPC, with a clock the test moves.

The expiry pass (RunExpiry here; every 60 s in the background) records one notice per wallet,
lot, expiry round and date once the lot is within its notice period; the stream delivers them
in order from a cursor; a lot expires only once its notice is a full notice period old.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.errors import error_info_of
from services.ledger import lots, notices
from tests.ledger.helpers import CREDIT, TIMEOUT, account, create_accounts, posted, unique
from tests.ledger.test_expiry import FIXED, Books
from tests.support.tls import channel as tls_channel

DAY_US = 86_400_000_000
MONTH_US = 31 * DAY_US
STREAM_SECONDS = 5


def watch(ledger, after: int = 0) -> list[pb.ExpiryNotice]:
    """The notices after `after` that exist now: the stream's first message holds them all (fewer
    than a page here); none before the deadline means there are none."""
    call = ledger.WatchExpiryNotices(pb.WatchExpiryNoticesRequest(after_notice_sequence=after), timeout=STREAM_SECONDS)
    try:
        return list(next(call).notices)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return []
        raise
    finally:
        call.cancel()


def of(found: list[pb.ExpiryNotice], wallet: str) -> list[pb.ExpiryNotice]:
    return [notice for notice in found if notice.account_id == wallet]


def test_a_lot_entering_its_notice_period_yields_exactly_one_notice_over_repeated_and_concurrent_passes(
    operator, clock
):
    books = Books(operator, FIXED, 2)
    wallet = books.wallet()
    lot_id = books.earn(wallet, 40)
    assert books.run().notices_recorded == 0  # two months away: not yet within 30 days
    clock.advance(40 * DAY_US)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: books.run(), range(4)))
    assert sum(run.notices_recorded for run in runs) == 1
    assert books.run().notices_recorded == 0
    (notice,) = of(watch(operator), wallet)
    assert (notice.owner_id, notice.currency_code, notice.lot_id, notice.amount) == ("m1", books.currency, lot_id, 40)
    assert notice.expiry_round == 0
    (lot,) = books.lots(wallet).lots
    # Noticed 10 days into the period (the clock jumped): the points get a full notice period.
    assert notice.expire_time.ToMicroseconds() == notice.notice_time.ToMicroseconds() + 30 * DAY_US
    assert notice.expire_time.ToMicroseconds() >= lot.expire_time.ToMicroseconds()


def test_the_stream_delivers_notices_in_order_and_resumes_after_a_cursor(ledger_server, operator, clock):
    books = Books(operator, FIXED, 2)
    first, second = books.wallet(), books.wallet()
    books.earn(first, 5)
    clock.advance(10 * DAY_US)
    books.earn(second, 6)
    clock.advance(25 * DAY_US)  # the first is within its notice period, the second not yet
    assert books.run().notices_recorded == 1
    (one,) = of(watch(operator), first)
    clock.advance(10 * DAY_US)
    assert books.run().notices_recorded == 1
    after = watch(operator, one.notice_sequence)
    assert of(after, first) == []
    (two,) = of(after, second)
    assert two.notice_sequence > one.notice_sequence and two.amount == 6
    sequences = [notice.notice_sequence for notice in watch(operator)]
    assert sequences == sorted(sequences) == list(range(sequences[0], sequences[0] + len(sequences)))
    # Partners (which sends the reminders) and settlement may follow it; a stranger may not.
    for identity in ("partners", "settlement"):
        with tls_channel(ledger_server.address, identity) as channel:
            assert watch(ledger_pb2_grpc.LedgerServiceStub(channel), one.notice_sequence - 1)[0] == one
    with tls_channel(ledger_server.address, "pos-demo") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            watch(ledger_pb2_grpc.LedgerServiceStub(channel))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_negative_cursor_is_an_invalid_argument(operator):
    call = operator.WatchExpiryNotices(pb.WatchExpiryNoticesRequest(after_notice_sequence=-1), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as refused:
        next(call)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(refused.value).reason == "INVALID_CURSOR"


def test_a_reinstated_lot_gets_a_new_notice_for_its_new_expiry(operator, clock):
    books = Books(operator, FIXED, 1)
    wallet = books.wallet()
    lot_id = books.earn(wallet, 25)
    clock.advance(3 * DAY_US)
    assert books.run().notices_recorded == 1
    clock.advance(2 * MONTH_US)
    assert books.run().amount_expired == 25
    entries = operator.ListAccountEntries(pb.ListAccountEntriesRequest(account_id=wallet), timeout=TIMEOUT)
    (expired,) = [e.transfer for e in entries.entries if e.transfer.code == pb.TRANSFER_CODE_EXPIRY]
    books.reverse(expired.id, books.breakage, wallet, 25)  # the operator reinstates
    recorded = books.run().notices_recorded
    clock.advance(3 * DAY_US)
    assert recorded + books.run().notices_recorded == 1
    first, again = of(watch(operator), wallet)
    assert (first.lot_id, first.expiry_round) == (again.lot_id, again.expiry_round - 1) == (lot_id, 0)
    (lot,) = books.lots(wallet).lots
    assert again.expire_time.ToMicroseconds() >= lot.expire_time.ToMicroseconds() > first.expire_time.ToMicroseconds()


def test_an_exempt_owner_gets_no_notice_while_exempt_and_one_when_the_exemption_ends(operator, clock):
    books = Books(operator, FIXED, 1)
    owner = unique("member")
    wallet = unique("wallet")
    create_accounts(
        operator, account(wallet, CREDIT, no_overdraft=True, currency=books.currency, kind="member_wallet", owner=owner)
    )
    operator.SetExpiryExemption(pb.SetExpiryExemptionRequest(owner_id=owner, exempt=True), timeout=TIMEOUT)
    books.earn(wallet, 9)
    clock.advance(3 * DAY_US)
    books.run()
    clock.advance(3 * MONTH_US)
    run = books.run()
    assert run.transfers_posted == 0 and of(watch(operator), wallet) == []
    operator.SetExpiryExemption(pb.SetExpiryExemptionRequest(owner_id=owner, exempt=False), timeout=TIMEOUT)
    assert books.run().notices_recorded == 1
    (notice,) = of(watch(operator), wallet)
    assert notice.expire_time.ToMicroseconds() >= notice.notice_time.ToMicroseconds() + 30 * DAY_US


def test_points_never_expire_without_a_notice_a_full_notice_period_old(operator, clock):
    """No pass ran during the notice period (the ledger was down): the late notice moves the expiry."""
    books = Books(operator, FIXED, 1)
    wallet = books.wallet()
    books.earn(wallet, 11)
    clock.advance(3 * MONTH_US)  # long past the lot's date, and no pass in between
    run = books.run()
    assert (run.transfers_posted, run.notices_recorded) == (0, 1)
    clock.advance(29 * DAY_US)
    assert books.run().transfers_posted == 0
    assert books.balance(wallet) == 11
    clock.advance(2 * DAY_US)
    run = books.run()
    assert (run.transfers_posted, run.amount_expired, run.notices_recorded) == (1, 11, 0)
    books.check_lots_equal_balance(wallet)


def test_a_transfer_restoring_an_expired_lot_after_its_date_gets_a_notice_before_it_expires_again(operator, clock):
    books = Books(operator, FIXED, 1)
    wallet = books.wallet()
    books.earn(wallet, 30)
    spent = books.redeem(wallet, 30)  # the lot is empty: no notice, nothing to expire
    clock.advance(3 * MONTH_US)
    assert books.run().notices_recorded == 0
    books.post(
        posted(
            unique("return"),
            books.redemption,
            wallet,
            30,
            code=pb.TRANSFER_CODE_REVERSAL,
            currency=books.currency,
            reverses_transfer_id=spent,
        )
    )
    run = books.run()
    assert (run.transfers_posted, run.notices_recorded) == (0, 1)


def test_a_notice_recorded_on_time_keeps_the_expiry_on_its_date():
    """A pass within its lookahead of the notice period records the notice; expire_time is the lot's date."""
    due = 100 * DAY_US
    lot = lots.Lot("w", "l", 0, due, 10, 10, lots.PolicyKind.FIXED)
    early = due - 30 * DAY_US - 60_000_000
    assert notices.notice_due(lot, due, early - 200_000_000, 120_000_000, "m", "PTS") is None
    notice = notices.notice_due(lot, due, early, 120_000_000, "m", "PTS")
    assert notice is not None and notice.expires_at_us == due
    assert not notices.may_expire(notice, due - 1) and notices.may_expire(notice, due)
    late = notices.notice_due(lot, due, due + DAY_US, 120_000_000, "m", "PTS")
    assert late.expires_at_us == due + 31 * DAY_US
    assert notices.notice_due(lots.Lot("w", "l", 0, due, 10, 0, lots.PolicyKind.FIXED), due, due, 0, "m", "X") is None
