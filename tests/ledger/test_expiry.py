"""Lots and expiry on the ledger (DOMAIN.md "Expiry"), over gRPC, with a clock the test moves.

The ledger's clock moves through `store.clock_offset_us` (there is no setting for it: a service
always runs on the server's clock). Months are passed as 31 days, so each step lands past the
calendar month it stands for.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.errors import error_info_of
from tests.ledger.helpers import (
    CREATED,
    CREDIT,
    DEBIT,
    TIMEOUT,
    account,
    create_accounts,
    pending,
    posted,
    register_currency,
    unique,
)
from tests.support.tls import channel as tls_channel

DAY_US = 86_400_000_000
MONTH_US = 31 * DAY_US
FIXED, INACTIVITY = pb.EXPIRY_POLICY_KIND_FIXED, pb.EXPIRY_POLICY_KIND_INACTIVITY


class Books:
    """A programme currency with a partner's issuance and redemption, breakage and member wallets."""

    def __init__(self, ledger, policy_kind=FIXED, months=36, **policy) -> None:
        self.ledger = ledger
        self.currency = f"X{unique('c')[-8:].upper()}"
        register_currency(ledger, self.currency, owner_id="p1")
        self.issuance, self.redemption = unique("issuance"), unique("redemption")
        self.breakage = f"breakage:{self.currency}"
        create_accounts(
            ledger,
            account(self.issuance, DEBIT, currency=self.currency, kind="partner_issuance", owner="p1"),
            account(self.redemption, CREDIT, currency=self.currency, kind="partner_redemption", owner="p1"),
            account(self.breakage, CREDIT, currency=self.currency, kind="operator_breakage", owner="operator"),
        )
        self.set_policy(policy_kind, months, **policy)

    def set_policy(self, kind, months, **fields):
        message = pb.ExpiryPolicy(currency_code=self.currency, kind=kind, months=months, **fields)
        return self.ledger.SetExpiryPolicy(pb.SetExpiryPolicyRequest(policy=message), timeout=TIMEOUT)

    def wallet(self) -> str:
        wallet_id = unique("wallet")
        create_accounts(
            self.ledger,
            account(wallet_id, CREDIT, no_overdraft=True, currency=self.currency, kind="member_wallet", owner="m1"),
        )
        return wallet_id

    def post(self, *transfers):
        results = self.ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=list(transfers)), timeout=TIMEOUT)
        assert all(r.status == CREATED for r in results.results), results
        return results

    def earn(self, wallet, amount) -> str:
        transfer_id = unique("earn")
        self.post(posted(transfer_id, self.issuance, wallet, amount, currency=self.currency))
        return transfer_id

    def redeem(self, wallet, amount) -> str:
        transfer_id = unique("redeem")
        self.post(
            posted(transfer_id, wallet, self.redemption, amount, code=pb.TRANSFER_CODE_REDEEM, currency=self.currency)
        )
        return transfer_id

    def reverse(self, original_id, debit, credit, amount) -> str:
        transfer_id = unique("reverse")
        self.post(
            posted(
                transfer_id,
                debit,
                credit,
                amount,
                code=pb.TRANSFER_CODE_REVERSAL,
                currency=self.currency,
                reverses_transfer_id=original_id,
            )
        )
        return transfer_id

    def lots(self, wallet) -> pb.ListLotsResponse:
        return self.ledger.ListLots(pb.ListLotsRequest(account_id=wallet), timeout=TIMEOUT)

    def open_by_lot(self, wallet) -> dict[str, int]:
        return {lot.lot_id: lot.open_amount for lot in self.lots(wallet).lots}

    def balance(self, wallet) -> int:
        (b,) = self.ledger.GetBalances(pb.GetBalancesRequest(account_ids=[wallet]), timeout=TIMEOUT).balances
        return b.credits_posted - b.debits_posted

    def run(self) -> pb.RunExpiryResponse:
        return self.ledger.RunExpiry(pb.RunExpiryRequest(), timeout=60)

    def check_lots_equal_balance(self, wallet) -> None:
        assert self.lots(wallet).open_total == self.balance(wallet)


def test_the_domain_example_a_36_month_lot_fifo_draws_expiry_and_a_return_restoring_lots(operator, clock):
    books = Books(operator, FIXED, 36)
    wallet = books.wallet()
    january = books.earn(wallet, 100)
    clock.advance(2 * MONTH_US)
    march = books.earn(wallet, 50)
    clock.advance(11 * MONTH_US)
    february = books.earn(wallet, 70)
    clock.advance(2 * MONTH_US)
    redemption = books.redeem(wallet, 120)  # draws 100 of January's lot and 20 of March's
    assert books.open_by_lot(wallet) == {march: 30, february: 70}
    lots = {lot.lot_id: lot for lot in books.lots(wallet).lots}
    march_expiry = lots[march].expire_time.ToMicroseconds()
    credit = lots[march].credit_time.ToMicroseconds()
    assert 36 * 30 * DAY_US < march_expiry - credit < 37 * 31 * DAY_US  # 36 calendar months, to the end of a day
    assert books.run().transfers_posted == 0  # nothing due yet
    # 29 days before the March lot's expiry (13 months on) it is within its notice period: noticed.
    clock.advance(march_expiry - credit - 13 * MONTH_US - 29 * DAY_US)
    assert books.run().notices_recorded == 1
    clock.advance(30 * DAY_US)  # past its expiry
    run = books.run()
    assert (run.transfers_posted, run.amount_expired) == (1, 30)
    assert books.open_by_lot(wallet) == {february: 70}
    assert books.balance(wallet) == 70
    # Returning the redemption restores 100 + 20 to their lots; both have expired, so they expire
    # again, after a notice period: nobody was told these points would expire.
    books.reverse(redemption, books.redemption, wallet, 120)
    assert books.open_by_lot(wallet) == {january: 100, march: 20, february: 70}
    run = books.run()
    assert (run.transfers_posted, run.notices_recorded) == (0, 2)
    clock.advance(30 * DAY_US + 1)
    run = books.run()
    assert (run.transfers_posted, run.amount_expired) == (2, 120)
    assert books.open_by_lot(wallet) == {february: 70}
    assert books.balance(wallet) == 70
    assert books.run().transfers_posted == 0  # running again posts nothing twice
    books.check_lots_equal_balance(wallet)


def test_a_debit_draws_soonest_expiring_first_across_three_lots_and_a_partial_reversal_restores_the_last_drawn(
    operator, clock
):
    books = Books(operator, FIXED, 24)
    wallet = books.wallet()
    first = books.earn(wallet, 10)
    clock.advance(MONTH_US)
    second = books.earn(wallet, 20)
    clock.advance(MONTH_US)
    books.set_policy(FIXED, 6)  # a shorter policy from now: the third lot expires before the others
    third = books.earn(wallet, 30)
    spent = books.redeem(wallet, 35)  # third (soonest) 30, then first 5
    assert books.open_by_lot(wallet) == {first: 5, second: 20}
    books.reverse(spent, books.redemption, wallet, 10)  # gives back the last drawn first: first's 5, then third's 5
    assert books.open_by_lot(wallet) == {third: 5, first: 10, second: 20}
    books.reverse(spent, books.redemption, wallet, 25)
    assert books.open_by_lot(wallet) == {third: 30, first: 10, second: 20}
    books.check_lots_equal_balance(wallet)


def test_a_policy_change_leaves_lots_already_credited_alone(operator, clock):
    books = Books(operator, FIXED, 36)
    wallet = books.wallet()
    old = books.earn(wallet, 10)
    old_expiry = books.lots(wallet).lots[0].expire_time.ToMicroseconds()
    recorded = books.set_policy(FIXED, 12)
    assert recorded.created
    new = books.earn(wallet, 10)
    lots = {lot.lot_id: lot.expire_time.ToMicroseconds() for lot in books.lots(wallet).lots}
    assert lots[old] == old_expiry
    assert lots[new] < old_expiry - 20 * MONTH_US
    policies = operator.ListExpiryPolicies(pb.ListExpiryPoliciesRequest(currency_code=books.currency), timeout=TIMEOUT)
    assert [p.months for p in policies.policies] == [36, 12]
    # A version in the past would claim points it never priced: refused.
    past = Timestamp()
    past.FromMicroseconds(policies.policies[0].effective_time.ToMicroseconds() - DAY_US)
    with pytest.raises(grpc.RpcError) as raised:
        books.set_policy(FIXED, 6, effective_time=past)
    assert error_info_of(raised.value).reason == "EFFECTIVE_TIME_IN_PAST"


def test_inactivity_expiry_is_reset_by_activity_and_then_takes_the_whole_balance(operator, clock):
    books = Books(operator, INACTIVITY, 24)
    wallet = books.wallet()
    books.earn(wallet, 40)
    clock.advance(23 * MONTH_US)
    books.earn(wallet, 2)  # an earn (at any partner) resets the clock
    clock.advance(23 * MONTH_US)
    assert books.run().transfers_posted == 0
    deadline = books.lots(wallet).inactivity_expire_time.ToMicroseconds()
    clock.advance(2 * MONTH_US)
    run = books.run()
    assert (run.transfers_posted, run.amount_expired) == (2, 42)
    assert books.balance(wallet) == 0
    assert deadline > 0


def test_points_held_by_an_open_hold_do_not_expire_until_the_hold_resolves(operator, clock):
    books = Books(operator, FIXED, 1)
    wallet = books.wallet()
    books.earn(wallet, 50)
    clock.advance(3 * DAY_US)
    assert books.run().notices_recorded == 1  # the lot is within its notice period
    clock.advance(26 * DAY_US)
    hold_id = unique("hold")
    hold = pending(hold_id, wallet, books.redemption, 20, timeout_seconds=30 * 86_400)
    hold.currency_code = books.currency
    books.post(hold)
    clock.advance(6 * DAY_US)  # the lot is due (a month and the 30-day notice have passed); the hold is open
    run = books.run()
    assert (run.transfers_posted, run.wallets_deferred) == (0, 1)
    books.post(pb.TransferInput(id=unique("void"), pending_id=hold_id, kind=pb.TRANSFER_KIND_VOID_PENDING))
    run = books.run()
    assert (run.transfers_posted, run.amount_expired) == (1, 50)
    books.check_lots_equal_balance(wallet)


def test_points_never_expire_before_their_notice_period(operator, clock):
    books = Books(operator, FIXED, 1, notice_days=45)
    wallet = books.wallet()
    books.earn(wallet, 5)
    (lot,) = books.lots(wallet).lots
    assert lot.expire_time.ToMicroseconds() - lot.credit_time.ToMicroseconds() >= 45 * DAY_US
    clock.advance(40 * DAY_US)
    assert books.run().transfers_posted == 0
    months = books.lots(wallet).expiring
    assert len(months) == 12 and sum(m.amount for m in months) == 5


def test_a_rerun_after_a_run_that_never_committed_posts_the_same_ids_once(ledger_database_url, operator, clock):
    """A crash mid-run rolls its transaction back; the next run derives the very same transfer ids."""
    from services.common.db import Database, DatabaseOptions
    from services.ledger import transfers

    books = Books(operator, FIXED, 1)
    wallets = [books.wallet() for _ in range(3)]
    for wallet in wallets:
        books.earn(wallet, 7)
    clock.advance(3 * DAY_US)
    assert books.run().notices_recorded == 3
    clock.advance(3 * MONTH_US)
    database = Database(DatabaseOptions(url=ledger_database_url, pool_size=2))
    try:
        with database.writer.connect() as connection:
            transaction = connection.begin()
            crashed = transfers.expiry.ExpiryRun(None, 100)
            transfers._apply(connection, [], sweep=False, lot_expiry=crashed)
            transaction.rollback()  # the crash: nothing of it committed
        assert len(crashed.targets) == 3
        run = books.run()
        assert run.transfers_posted == 3
        found = operator.GetTransfers(pb.GetTransfersRequest(ids=sorted(crashed.targets)), timeout=TIMEOUT)
        assert sorted(t.id for t in found.transfers) == sorted(crashed.targets)
        assert all(t.code == pb.TRANSFER_CODE_EXPIRY for t in found.transfers)
        assert books.run().transfers_posted == 0
    finally:
        database.dispose()


def test_lots_sum_to_the_balance_under_concurrent_earns_spends_and_returns(operator, clock):
    books = Books(operator, FIXED, 12)
    wallet = books.wallet()
    books.earn(wallet, 1_000)

    def work(n: int) -> None:
        books.earn(wallet, 5)
        try:
            spent = books.redeem(wallet, 7)
        except AssertionError:  # not enough available at that moment: refused, fine
            return
        if n % 2:
            books.reverse(spent, books.redemption, wallet, 3)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(48)))
    books.check_lots_equal_balance(wallet)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operations=st.lists(
        st.tuples(st.sampled_from(["earn", "redeem", "reverse", "month", "expire"]), st.integers(1, 60)),
        min_size=1,
        max_size=14,
    )
)
def test_open_lots_always_sum_to_the_posted_balance(operator, clock, operations):
    books = Books(operator, FIXED, 3)
    wallet = books.wallet()
    redemptions: list[tuple[str, int]] = []
    for operation, amount in operations:
        balance = books.balance(wallet)
        if operation == "earn":
            books.earn(wallet, amount)
        elif operation == "redeem" and balance >= amount:
            redemptions.append((books.redeem(wallet, amount), amount))
        elif operation == "reverse" and redemptions:
            original, left = redemptions.pop()
            books.reverse(original, books.redemption, wallet, min(amount, left))
        elif operation == "month":
            clock.advance(MONTH_US)
        elif operation == "expire":
            books.run()
        books.check_lots_equal_balance(wallet)


def test_only_the_operator_sets_policies_and_runs_expiry(ledger_server, operator):
    books = Books(operator, FIXED, 36)
    with tls_channel(ledger_server.address, "partners") as channel:
        partners = ledger_pb2_grpc.LedgerServiceStub(channel)
        for method, request in (
            ("SetExpiryPolicy", pb.SetExpiryPolicyRequest(policy=pb.ExpiryPolicy(currency_code=books.currency))),
            ("RunExpiry", pb.RunExpiryRequest()),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                getattr(partners, method)(request, timeout=TIMEOUT)
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        wallet = books.wallet()
        assert partners.ListLots(pb.ListLotsRequest(account_id=wallet), timeout=TIMEOUT).open_total == 0


def _expiries(books) -> list[pb.Transfer]:
    entries = books.ledger.ListAccountEntries(pb.ListAccountEntriesRequest(account_id=books.breakage), timeout=TIMEOUT)
    return [e.transfer for e in entries.entries if e.transfer.code == pb.TRANSFER_CODE_EXPIRY]


def test_a_reinstated_expiry_brings_the_same_lot_back_with_a_new_expiry_within_the_window(operator, clock):
    books = Books(operator, FIXED, 1)
    wallet = books.wallet()
    lot_id = books.earn(wallet, 25)
    clock.advance(3 * DAY_US)
    assert books.run().notices_recorded == 1
    clock.advance(2 * MONTH_US)
    assert books.run().amount_expired == 25
    (expired,) = _expiries(books)
    assert (expired.metadata.member_id, expired.metadata.partner_id) == (
        "m1",
        "p1",
    )  # the member, and the partner that issued
    clock.advance(10 * DAY_US)
    books.reverse(expired.id, books.breakage, wallet, 25)  # the operator reinstates
    (lot,) = books.lots(wallet).lots
    assert (lot.lot_id, lot.open_amount) == (lot_id, 25)
    now = expired.commit_time.ToMicroseconds() + 10 * DAY_US
    assert lot.expire_time.ToMicroseconds() > now + 28 * DAY_US  # a new expiry, as if credited today
    run = books.run()
    assert run.transfers_posted == 0
    clock.advance(3 * DAY_US)  # within the new expiry's notice period (it may have begun at once)
    assert run.notices_recorded + books.run().notices_recorded == 1  # a new notice for the new expiry
    # It expires again when its new date comes, under a new id; that one is past the window later.
    clock.advance(2 * MONTH_US)
    assert books.run().amount_expired == 25
    second = next(t for t in _expiries(books) if t.id != expired.id)
    clock.advance(91 * DAY_US)
    late = posted(
        unique("reinstate"),
        books.breakage,
        wallet,
        25,
        code=pb.TRANSFER_CODE_REVERSAL,
        currency=books.currency,
        reverses_transfer_id=second.id,
    )
    (result,) = operator.CreateTransfers(pb.CreateTransfersRequest(transfers=[late]), timeout=TIMEOUT).results
    assert result.failure_reason == pb.FAILURE_REASON_REINSTATEMENT_WINDOW_CLOSED
    books.check_lots_equal_balance(wallet)


def test_wallets_with_points_expiring_soon_are_listed_for_reminders_page_by_page(operator, clock):
    books = Books(operator, FIXED, 2)
    soon = sorted(books.wallet() for _ in range(3))
    later = books.wallet()
    for wallet in soon:
        books.earn(wallet, 9)
    clock.advance(40 * DAY_US)
    books.earn(later, 4)
    clock.advance(5 * DAY_US)  # the first three are due in ~2 weeks, the last in ~8 weeks

    def listing(**fields):
        request = pb.ListExpiringSoonRequest(currency_code=books.currency, **fields)
        return operator.ListExpiringSoon(request, timeout=TIMEOUT)

    first = listing(page_size=2)
    assert [w.account_id for w in first.wallets] == soon[:2] and first.next_page_token
    second = listing(page_size=2, page_token=first.next_page_token)
    assert [w.account_id for w in second.wallets] == soon[2:]
    assert all(w.amount == 9 and w.owner_id == "m1" for w in first.wallets)
    assert later in [w.account_id for w in listing(within_days=60).wallets]


def test_an_exempt_member_keeps_their_points_until_the_exemption_ends(operator, clock):
    books = Books(operator, FIXED, 1)
    wallet = books.wallet()  # owned by m1
    books.earn(wallet, 12)

    def exempt(flag: bool) -> None:
        request = pb.SetExpiryExemptionRequest(owner_id="m1", exempt=flag)
        assert operator.SetExpiryExemption(request, timeout=TIMEOUT).exempt is flag

    exempt(True)
    exempt(True)  # idempotent
    assert books.lots(wallet).exempt
    assert sum(month.amount for month in books.lots(wallet).expiring) == 0  # nothing of theirs expires
    clock.advance(3 * MONTH_US)
    assert books.run().transfers_posted == 0
    assert books.balance(wallet) == 12
    listing = operator.ListExpiringSoon(pb.ListExpiringSoonRequest(currency_code=books.currency), timeout=TIMEOUT)
    assert wallet not in [w.account_id for w in listing.wallets]  # nobody to remind
    exempt(False)
    # Nothing of theirs was listed as expiring while exempt: a full notice period comes first.
    run = books.run()
    assert (run.transfers_posted, run.notices_recorded) == (0, 1)
    assert sum(month.amount for month in books.lots(wallet).expiring) == 12
    clock.advance(31 * DAY_US)
    assert books.run().amount_expired == 12
    books.check_lots_equal_balance(wallet)


def test_wallets_that_cannot_expire_yet_never_keep_the_others_from_their_turn(operator, clock, monkeypatch):
    """Pages of wallets that post nothing (exempt, held) are paged past, not stopped at."""
    from services.ledger import limits

    monkeypatch.setattr(limits, "EXPIRY_RUN_WALLETS_MAX", 2)
    books = Books(operator, FIXED, 1)
    exempt_wallets = []
    for number in range(4):
        wallet = unique("wallet")
        owner = f"exempt-{number}"
        create_accounts(
            operator,
            account(wallet, CREDIT, no_overdraft=True, currency=books.currency, kind="member_wallet", owner=owner),
        )
        operator.SetExpiryExemption(pb.SetExpiryExemptionRequest(owner_id=owner, exempt=True), timeout=TIMEOUT)
        exempt_wallets.append(wallet)
    ordinary = f"zz-{unique('wallet')}"  # sorts after every exempt wallet
    create_accounts(
        operator,
        account(ordinary, CREDIT, no_overdraft=True, currency=books.currency, kind="member_wallet", owner="m9"),
    )
    for wallet in [*exempt_wallets, ordinary]:
        books.earn(wallet, 3)
    clock.advance(3 * DAY_US)
    assert books.run().notices_recorded == 1  # none for the exempt
    clock.advance(3 * MONTH_US)
    run = books.run()
    assert (run.transfers_posted, run.amount_expired) == (1, 3)
    assert books.balance(ordinary) == 0
    assert all(books.balance(wallet) == 3 for wallet in exempt_wallets)


def _draw_order_expected(lots: dict[str, tuple[int, int, int]], amount: int) -> dict[str, int]:
    """The open amounts after drawing `amount` soonest-expiring first (then earliest credited, then
    lot id in code point order), from {lot id: (expires, credited, open)}: the rule stated once more."""
    left = {lot_id: open_amount for lot_id, (_, _, open_amount) in lots.items()}
    for lot_id in sorted(lots, key=lambda key: (lots[key][0], lots[key][1], key)):
        taken = min(left[lot_id], amount)
        left[lot_id] -= taken
        amount -= taken
    return {lot_id: open_amount for lot_id, open_amount in left.items() if open_amount}


def test_debits_draw_in_order_across_more_lots_than_a_batch_first_reads(operator, clock):
    """A batch reads a debited wallet's first lots only (lot_store.DRAW_LOTS_FIRST), and all of them
    when those fall short: draws across both, and lots credited together (equal times), land as
    if every lot had been read."""
    from services.ledger import lot_store

    books = Books(operator, FIXED, 24)
    wallet = books.wallet()
    count = 3 * lot_store.DRAW_LOTS_FIRST
    # Credited together in threes (one batch, one commit time): ties broken by lot id, one across
    # the first read's end.
    for start in range(0, count, 3):
        books.post(
            *(
                posted(f"earn-{index:03d}-{unique('t')}", books.issuance, wallet, 10 + index, currency=books.currency)
                for index in range(start, start + 3)
            )
        )
        clock.advance(DAY_US)
    books.set_policy(FIXED, 6)  # later lots expire first
    for _ in range(2):
        books.earn(wallet, 5)
    books.set_policy(INACTIVITY, 24)  # no expiry date of their own: drawn last
    for _ in range(2):
        books.earn(wallet, 6)
    never = 2**62
    for amount in (3, 40, 10 * lot_store.DRAW_LOTS_FIRST + 150, 1, 500, None):
        before = {
            lot.lot_id: (
                lot.expire_time.ToMicroseconds() if lot.HasField("expire_time") else never,
                lot.credit_time.ToMicroseconds(),
                lot.open_amount,
            )
            for lot in books.lots(wallet).lots
        }
        if amount is None:  # all but 4: only the last lot credited without a date keeps any
            amount = books.balance(wallet) - 4
        books.redeem(wallet, amount)
        assert books.open_by_lot(wallet) == _draw_order_expected(before, amount)
    books.check_lots_equal_balance(wallet)


def test_a_batch_reads_only_the_lots_its_debits_can_reach(ledger_database_url, operator, clock):
    from services.common.db import Database, DatabaseOptions
    from services.ledger import lot_store

    books = Books(operator, FIXED, 24)
    wallet = books.wallet()
    for _ in range(40):
        books.earn(wallet, 10)
        clock.advance(DAY_US)
    other = books.wallet()
    books.earn(other, 7)
    # Lots without a date of their own are drawn last, so the first read never stops at them.
    mixed = books.wallet()
    dated = [books.earn(mixed, 10) for _ in range(lot_store.DRAW_LOTS_FIRST)]
    books.set_policy(INACTIVITY, 24)
    for _ in range(2):
        books.earn(mixed, 100)
    database = Database(DatabaseOptions(url=ledger_database_url, pool_size=1))
    try:
        with database.reader.connect() as connection:
            read = lot_store.lots_to_draw
            everything = set(lot_store.open_lots(connection, [wallet]))
            postgres = connection.dialect.name == "postgresql"
            one = read(connection, {wallet: 1})
            assert len(one) == (1 if postgres else 40)  # SQLite reads the wallet whole
            assert len(read(connection, {wallet: 30, other: 7})) == (3 + 1 if postgres else 41)
            # Beyond the first lots read: the whole wallet, as before.
            assert set(read(connection, {wallet: 10 * lot_store.DRAW_LOTS_FIRST + 1})) == everything
            assert set(read(connection, {wallet: 10_000})) == everything
            assert read(connection, {}) == {}
            if postgres:
                assert {lot_id for _, lot_id in read(connection, {mixed: 150})} == set(dated[:15])
    finally:
        database.dispose()
