"""Read paths of the ledger over real gRPC: currencies, accounts, transfers, balances, entries,
trial balance and activity summary, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from coalition.ledger.v1 import ledger_pb2 as pb
from services.common.errors import error_info_of
from services.common.timeconv import micros_from_timestamp, timestamp_from_micros
from tests.ledger.helpers import (
    CREATED,
    CREDIT,
    DEBIT,
    EXISTS,
    FAILED,
    TIMEOUT,
    account,
    create_accounts,
    pending,
    post,
    posted,
    register_currency,
    setup_pts,
    transfer,
    unique,
    void,
)

# Commit times are microseconds; a short pause gives consecutive calls distinct commit times.
PAUSE_SECONDS = 0.005


def commit(ledger, item) -> pb.Transfer:
    """Create one transfer, insist it was created, and leave a gap before the next commit time."""
    [result] = transfer(ledger, item)
    assert result.status == CREATED, result
    time.sleep(PAUSE_SECONDS)
    return result.transfer


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=TIMEOUT, **kwargs)
    return caught.value


def page_token(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


# --- currencies -------------------------------------------------------------------------------


def test_register_currency_twice_with_same_content_returns_existing_not_created(ledger):
    first = register_currency(ledger, "PTS", scale=2)
    again = register_currency(ledger, "PTS", scale=2)
    assert first.created is True
    assert again.created is False
    assert again.currency == first.currency
    assert (again.currency.code, again.currency.scale, again.currency.owner_id) == ("PTS", 2, "operator")


def test_register_currency_with_different_scale_is_already_exists_with_reason(ledger):
    register_currency(ledger, "PTS", scale=0)
    error = rpc_error(
        ledger.RegisterCurrency,
        pb.RegisterCurrencyRequest(currency=pb.Currency(code="PTS", scale=2, owner_id="operator")),
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info_of(error)
    assert info is not None
    assert info.reason == "CURRENCY_EXISTS_WITH_DIFFERENT_CONTENT"
    assert info.metadata["field"] == "scale"
    [stored] = ledger.ListCurrencies(pb.ListCurrenciesRequest(), timeout=TIMEOUT).currencies
    assert stored.scale == 0


def test_list_currencies_is_ordered_by_code(ledger):
    codes = ["PTS", "EUR", "HOTEL_PTS", "AIR2", "AIRMILES", "ZZ"]
    for code in codes:
        register_currency(ledger, code)
    listed = ledger.ListCurrencies(pb.ListCurrenciesRequest(), timeout=TIMEOUT).currencies
    assert [c.code for c in listed] == sorted(codes)


# --- accounts -----------------------------------------------------------------------------------


def test_create_accounts_batch_with_unknown_currency_creates_none_of_the_batch(ledger):
    register_currency(ledger, "PTS")
    good_a, bad, good_b = unique("a"), unique("bad"), unique("b")
    response = ledger.CreateAccounts(
        pb.CreateAccountsRequest(
            accounts=[account(good_a), account(bad, currency="NOPE"), account(good_b)],
        ),
        timeout=TIMEOUT,
    )
    statuses = [r.status for r in response.results]
    assert statuses[1] == FAILED
    assert response.results[1].failure_reason == pb.FAILURE_REASON_CURRENCY_NOT_FOUND
    for account_id in (good_a, bad, good_b):
        error = rpc_error(ledger.GetAccount, pb.GetAccountRequest(account_id=account_id))
        assert error.code() == grpc.StatusCode.NOT_FOUND, account_id
    listed = ledger.ListAccounts(pb.ListAccountsRequest(), timeout=TIMEOUT).accounts
    assert list(listed) == []


def test_create_accounts_failed_batch_reports_no_item_as_created(ledger):
    register_currency(ledger, "PTS")
    response = ledger.CreateAccounts(
        pb.CreateAccountsRequest(accounts=[account(unique("a")), account(unique("bad"), currency="NOPE")]),
        timeout=TIMEOUT,
    )
    assert [r.status for r in response.results] == [FAILED, FAILED]
    assert not response.results[0].HasField("account")


def test_create_accounts_same_id_same_content_is_already_exists(ledger):
    register_currency(ledger, "PTS")
    wallet = account(unique("wallet"), CREDIT, no_overdraft=True, owner="m-1", kind="member_wallet")
    [created] = create_accounts(ledger, wallet).results
    [again] = create_accounts(ledger, wallet).results
    assert created.status == CREATED
    assert again.status == EXISTS
    assert again.account == created.account


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("currency_code", {"currency": "EUR"}),
        ("normal_side", {"side": DEBIT}),
        ("no_overdraft", {"no_overdraft": False}),
        ("owner_id", {"owner": "m-2"}),
        ("kind", {"kind": "partner_issuance"}),
    ],
)
def test_create_accounts_same_id_different_content_fails_naming_the_field(ledger, field, changes):
    register_currency(ledger, "PTS")
    register_currency(ledger, "EUR")
    account_id = unique("wallet")
    original = {"side": CREDIT, "no_overdraft": True, "currency": "PTS", "owner": "m-1", "kind": "member_wallet"}
    create_accounts(ledger, account(account_id, **original))
    response = ledger.CreateAccounts(
        pb.CreateAccountsRequest(accounts=[account(account_id, **{**original, **changes})]), timeout=TIMEOUT
    )
    [result] = response.results
    assert result.status == FAILED
    assert result.failure_reason == pb.FAILURE_REASON_ACCOUNT_EXISTS_WITH_DIFFERENT_CONTENT
    assert result.failure_field == field
    stored = ledger.GetAccount(pb.GetAccountRequest(account_id=account_id), timeout=TIMEOUT).account
    assert (stored.currency_code, stored.owner_id, stored.kind) == ("PTS", "m-1", "member_wallet")


def test_get_account_unknown_is_not_found_with_reason(ledger):
    register_currency(ledger, "PTS")
    error = rpc_error(ledger.GetAccount, pb.GetAccountRequest(account_id="wallet:nobody"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = error_info_of(error)
    assert info is not None
    assert info.reason == "ACCOUNT_NOT_FOUND"
    assert info.metadata["account_id"] == "wallet:nobody"


def list_every_page(ledger, **filters) -> tuple[list[str], int]:
    """Follow next_page_token to the end with page_size 2; returns the ids and the page count."""
    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        response = ledger.ListAccounts(
            pb.ListAccountsRequest(page_size=2, page_token=token, **filters), timeout=TIMEOUT
        )
        pages += 1
        assert len(response.accounts) <= 2
        ids.extend(a.id for a in response.accounts)
        token = response.next_page_token
        if not token:
            return ids, pages
        assert pages < 20, "pagination does not terminate"


def make_accounts_of_owners_and_kinds(ledger):
    register_currency(ledger, "PTS")
    alice = [f"acct:alice:{n}" for n in range(5)]
    bob = [f"acct:bob:{n}" for n in range(3)]
    create_accounts(
        ledger,
        *(
            account(a, owner="alice", kind="member_wallet" if n % 2 else "partner_issuance")
            for n, a in enumerate(alice)
        ),
        *(account(b, owner="bob", kind="member_wallet") for b in bob),
    )
    return alice, bob


def test_list_accounts_by_owner_pages_through_every_account_once(ledger):
    alice, bob = make_accounts_of_owners_and_kinds(ledger)
    ids, pages = list_every_page(ledger, owner_id="alice")
    assert ids == sorted(alice)
    assert pages == 3
    ids, pages = list_every_page(ledger, owner_id="bob")
    assert ids == sorted(bob)
    assert pages == 2


def test_list_accounts_by_kind_pages_through_every_account_once(ledger):
    alice, bob = make_accounts_of_owners_and_kinds(ledger)
    wallets = [a for n, a in enumerate(alice) if n % 2] + bob
    ids, _ = list_every_page(ledger, kind="member_wallet")
    assert ids == sorted(wallets)
    ids, _ = list_every_page(ledger, owner_id="alice", kind="partner_issuance")
    assert ids == sorted(a for n, a in enumerate(alice) if not n % 2)


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "bm90LWpzb24",  # base64 of "not-json"
        page_token([3]),  # a sequence where an account id belongs
        page_token(["a", "b"]),
        page_token({"before_sequence": 3}),
        page_token({"after_id": "acct:alice:1", "extra": 1}),
    ],
)
def test_list_accounts_invalid_page_token_is_invalid_argument(ledger, token):
    make_accounts_of_owners_and_kinds(ledger)
    error = rpc_error(ledger.ListAccounts, pb.ListAccountsRequest(page_size=2, page_token=token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(error).reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("after_id", [5, {"x": 1}, None])
def test_list_accounts_page_token_with_non_string_cursor_is_invalid_argument(ledger, after_id):
    make_accounts_of_owners_and_kinds(ledger)
    error = rpc_error(ledger.ListAccounts, pb.ListAccountsRequest(page_size=2, page_token=page_token([after_id])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_of(error).reason == "INVALID_PAGE_TOKEN"


# --- transfers and balances --------------------------------------------------------------------


def test_get_transfers_returns_request_order_and_omits_unknown_ids(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    first = commit(ledger, posted(unique("t"), issuance, wallet, 10))
    second = commit(ledger, posted(unique("t"), issuance, wallet, 20))
    third = commit(ledger, posted(unique("t"), issuance, wallet, 30))
    ids = [third.id, "missing-1", first.id, "missing-2", second.id]
    found = ledger.GetTransfers(pb.GetTransfersRequest(ids=ids), timeout=TIMEOUT).transfers
    assert [t.id for t in found] == [third.id, first.id, second.id]
    assert [t.amount for t in found] == [30, 10, 20]
    assert list(found) == [third, first, second]


def test_get_balances_as_of_time_between_transfers_is_the_earlier_state(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    earn = commit(ledger, posted(unique("earn"), issuance, wallet, 100))
    hold = commit(ledger, pending(unique("hold"), wallet, shop, 30))
    later = commit(ledger, posted(unique("earn"), issuance, wallet, 50))
    hold_us, later_us = micros_from_timestamp(hold.commit_time), micros_from_timestamp(later.commit_time)
    assert micros_from_timestamp(earn.commit_time) < hold_us < later_us
    between = timestamp_from_micros((hold_us + later_us) // 2)

    for as_of in (hold.commit_time, between):
        [wallet_then, issuance_then] = ledger.GetBalances(
            pb.GetBalancesRequest(account_ids=[wallet, issuance], as_of_time=as_of), timeout=TIMEOUT
        ).balances
        assert (wallet_then.posted, wallet_then.pending, wallet_then.available) == (100, 30, 70)
        assert (wallet_then.credits_posted, wallet_then.debits_pending) == (100, 30)
        assert (issuance_then.account_id, issuance_then.posted) == (issuance, 100)
        assert wallet_then.as_of_time == as_of

    [now] = ledger.GetBalances(pb.GetBalancesRequest(account_ids=[wallet]), timeout=TIMEOUT).balances
    assert (now.posted, now.pending, now.available) == (150, 30, 120)


def test_get_balances_as_of_before_any_transfer_is_zero(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    earn = commit(ledger, posted(unique("earn"), issuance, wallet, 100))
    before = timestamp_from_micros(micros_from_timestamp(earn.commit_time) - 1)
    balances = ledger.GetBalances(
        pb.GetBalancesRequest(account_ids=[wallet, issuance], as_of_time=before), timeout=TIMEOUT
    ).balances
    for balance in balances:
        assert (balance.debits_posted, balance.credits_posted, balance.debits_pending, balance.credits_pending) == (
            0,
            0,
            0,
            0,
        )
        assert (balance.posted, balance.pending, balance.available) == (0, 0, 0)


# --- account entries ---------------------------------------------------------------------------


def wallet_history(ledger):
    """Seven transfers touching one wallet, each committed at its own time; returns them oldest first."""
    issuance, (wallet, shop) = setup_pts(ledger)
    earn = posted(unique("earn"), issuance, wallet, 100)
    hold = pending(unique("hold"), wallet, shop, 30)
    history = [commit(ledger, earn), commit(ledger, hold)]
    history.append(commit(ledger, post(unique("capture"), hold.id, 20)))
    history.append(commit(ledger, posted(unique("earn"), issuance, wallet, 50)))
    hold_two = pending(unique("hold"), wallet, shop, 10)
    history.append(commit(ledger, hold_two))
    history.append(commit(ledger, void(unique("void"), hold_two.id)))
    reversal = posted(
        unique("reversal"), wallet, issuance, 40, code=pb.TRANSFER_CODE_REVERSAL, reverses_transfer_id=earn.id
    )
    history.append(commit(ledger, reversal))
    return wallet, history


def list_entries(ledger, account_id, page_size=2, **window) -> tuple[list[pb.Entry], int]:
    entries: list[pb.Entry] = []
    token = ""
    pages = 0
    while True:
        response = ledger.ListAccountEntries(
            pb.ListAccountEntriesRequest(account_id=account_id, page_size=page_size, page_token=token, **window),
            timeout=TIMEOUT,
        )
        pages += 1
        assert len(response.entries) <= page_size
        entries.extend(response.entries)
        token = response.next_page_token
        if not token:
            return entries, pages
        assert pages < 50, "pagination does not terminate"


def test_list_account_entries_is_newest_first(ledger):
    wallet, history = wallet_history(ledger)
    response = ledger.ListAccountEntries(pb.ListAccountEntriesRequest(account_id=wallet), timeout=TIMEOUT)
    assert response.next_page_token == ""
    assert [e.transfer.id for e in response.entries] == [t.id for t in reversed(history)]
    sequences = [e.transfer.commit_sequence for e in response.entries]
    assert sequences == sorted(sequences, reverse=True)
    assert all(e.account_id == wallet for e in response.entries)


def test_list_account_entries_pages_cover_every_entry_exactly_once(ledger):
    wallet, history = wallet_history(ledger)
    entries, pages = list_entries(ledger, wallet, page_size=2)
    assert pages == 4
    assert [e.transfer.id for e in entries] == [t.id for t in reversed(history)]
    assert len({e.transfer.commit_sequence for e in entries}) == len(history)


def test_list_account_entries_time_window_keeps_start_and_excludes_end(ledger):
    wallet, history = wallet_history(ledger)
    start, end = history[2].commit_time, history[5].commit_time
    entries, _ = list_entries(ledger, wallet, page_size=2, start_time=start, end_time=end)
    assert [e.transfer.id for e in entries] == [t.id for t in reversed(history[2:5])]
    only_start, _ = list_entries(ledger, wallet, start_time=history[5].commit_time)
    assert [e.transfer.id for e in only_start] == [history[6].id, history[5].id]
    only_end, _ = list_entries(ledger, wallet, end_time=history[1].commit_time)
    assert [e.transfer.id for e in only_end] == [history[0].id]


def test_list_account_entries_balance_after_follows_the_running_balance(ledger):
    wallet, history = wallet_history(ledger)
    entries, _ = list_entries(ledger, wallet, page_size=3)
    assert len(entries) == len(history)
    running = {"debits_posted": 0, "credits_posted": 0, "debits_pending": 0, "credits_pending": 0}
    for entry in reversed(entries):  # oldest first
        side = "debits" if entry.side == DEBIT else "credits"
        running[f"{side}_posted"] += entry.posted_amount
        running[f"{side}_pending"] += entry.pending_change
        after = entry.balance_after
        assert {name: getattr(after, name) for name in running} == running, entry
        # A wallet is a credit account: posted = credits - debits, pending = held debits.
        assert after.posted == after.credits_posted - after.debits_posted
        assert after.pending == after.debits_pending
        assert after.available == after.posted - after.pending
        assert after.account_id == wallet
        assert after.as_of_time == entry.transfer.commit_time
    # earn 100, capture 20 of a 30 hold, earn 50, void a 10 hold, reverse 40 of the first earn.
    assert [e.side for e in reversed(entries)] == [CREDIT, DEBIT, DEBIT, CREDIT, DEBIT, DEBIT, DEBIT]
    assert [e.posted_amount for e in reversed(entries)] == [100, 0, 20, 50, 0, 0, 40]
    assert [e.pending_change for e in reversed(entries)] == [0, 30, -30, 0, 10, -10, 0]
    final = ledger.GetBalances(pb.GetBalancesRequest(account_ids=[wallet]), timeout=TIMEOUT).balances[0]
    assert (final.posted, final.pending, final.available) == (90, 0, 90)
    assert entries[0].balance_after.posted == final.posted


def test_list_account_entries_report_the_hold_state_of_pending_transfers(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    commit(ledger, posted(unique("earn"), issuance, wallet, 100))
    hold = commit(ledger, pending(unique("hold"), wallet, shop, 30))
    [looked_up] = ledger.GetTransfers(pb.GetTransfersRequest(ids=[hold.id]), timeout=TIMEOUT).transfers
    assert looked_up.hold_state == pb.HOLD_STATE_PENDING
    newest = ledger.ListAccountEntries(pb.ListAccountEntriesRequest(account_id=wallet), timeout=TIMEOUT).entries[0]
    assert newest.transfer.id == hold.id
    assert newest.transfer.hold_state == pb.HOLD_STATE_PENDING


# --- trial balance and activity ----------------------------------------------------------------


def test_trial_balance_balances_each_currency_with_posted_and_pending(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    register_currency(ledger, "EUR", scale=2)
    bank, partner = unique("bank"), unique("partner")
    create_accounts(ledger, account(bank, DEBIT, currency="EUR"), account(partner, CREDIT, currency="EUR"))
    transfer(ledger, posted(unique("earn"), issuance, wallet, 500))
    transfer(ledger, pending(unique("hold"), wallet, shop, 200))
    [last] = transfer(
        ledger, posted(unique("pay"), bank, partner, 70, code=pb.TRANSFER_CODE_SETTLEMENT, currency="EUR")
    )

    trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=TIMEOUT)
    assert trial.balanced
    assert trial.commit_sequence == last.transfer.commit_sequence == 3
    eur, pts = trial.currencies
    assert (eur.currency_code, pts.currency_code) == ("EUR", "PTS")
    assert (eur.debits_posted, eur.credits_posted, eur.debits_pending, eur.credits_pending) == (70, 70, 0, 0)
    assert (pts.debits_posted, pts.credits_posted, pts.debits_pending, pts.credits_pending) == (500, 500, 200, 200)
    assert (eur.account_count, pts.account_count) == (2, 3)
    assert eur.balanced and pts.balanced


def test_trial_balance_commit_sequence_matches_its_figures_under_concurrent_writes(ledger, backend, request):
    """commit_sequence is documented as the sequence the figures are consistent with: with every
    transfer an earn of 1 point, the posted debits must equal it in every snapshot."""
    issuance, wallets = setup_pts(ledger, wallets=4)
    deadline = time.monotonic() + 3
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            n = 0
            while time.monotonic() < deadline:
                transfer(ledger, posted(f"w{writer}-{n}", issuance, wallets[writer], 1))
                n += 1
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(wallets))]
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() < deadline:
            trial = ledger.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=TIMEOUT)
            if trial.currencies:
                assert trial.currencies[0].debits_posted == trial.commit_sequence, trial
    finally:
        for thread in threads:
            thread.join(timeout=TIMEOUT)
    assert not errors, errors[0]


def test_activity_summary_totals_posted_movement_per_account_and_code_in_the_window(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    other_issuance, (other_wallet, _) = setup_pts(ledger, wallets=2)
    commit(ledger, posted(unique("before"), issuance, wallet, 1000))
    earn = commit(ledger, posted(unique("earn"), issuance, wallet, 100))
    commit(ledger, posted(unique("earn"), issuance, wallet, 50))
    commit(ledger, posted(unique("other"), other_issuance, other_wallet, 5))
    reversal = posted(
        unique("reversal"), wallet, issuance, 30, code=pb.TRANSFER_CODE_REVERSAL, reverses_transfer_id=earn.id
    )
    commit(ledger, reversal)
    hold = pending(unique("hold"), wallet, shop, 40)
    commit(ledger, hold)
    commit(ledger, post(unique("capture"), hold.id, 25))
    open_hold = commit(ledger, pending(unique("open-hold"), wallet, shop, 10))
    after = commit(ledger, posted(unique("after"), issuance, wallet, 7))

    summary = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(
            start_time=earn.commit_time, end_time=after.commit_time, account_ids=[issuance, wallet, shop]
        ),
        timeout=TIMEOUT,
    )
    lines = {(line.account_id, line.code): line for line in summary.lines}
    got = {key: (line.debits_posted, line.credits_posted, line.transfer_count) for key, line in lines.items()}
    assert got == {
        (issuance, pb.TRANSFER_CODE_EARN): (150, 0, 2),
        (issuance, pb.TRANSFER_CODE_REVERSAL): (0, 30, 1),
        (wallet, pb.TRANSFER_CODE_EARN): (0, 150, 2),
        (wallet, pb.TRANSFER_CODE_REVERSAL): (30, 0, 1),
        (wallet, pb.TRANSFER_CODE_REDEEM): (25, 0, 1),
        (shop, pb.TRANSFER_CODE_REDEEM): (0, 25, 1),
    }
    assert [(line.account_id, line.code) for line in summary.lines] == sorted(lines)
    assert all(line.currency_code == "PTS" for line in summary.lines)
    assert lines[(issuance, pb.TRANSFER_CODE_EARN)].kind == "partner_issuance"
    assert lines[(wallet, pb.TRANSFER_CODE_EARN)].kind == "member_wallet"
    # The open hold moved no posted value, but it is the last transfer inside the window.
    assert summary.last_commit_sequence == open_hold.commit_sequence

    everyone = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(start_time=earn.commit_time, end_time=after.commit_time), timeout=TIMEOUT
    )
    other_lines = {(line.account_id, line.code) for line in everyone.lines} - set(lines)
    assert other_lines == {(other_issuance, pb.TRANSFER_CODE_EARN), (other_wallet, pb.TRANSFER_CODE_EARN)}


def test_activity_summary_sums_the_tier_bonus_of_earns_and_earn_reversals_per_account_and_code(ledger):
    """The bonus is summed over the same transfers as the posted amounts: before the window and
    after it are left out, a transfer without a bonus adds 0, a redemption adds nothing."""
    issuance, (wallet, shop) = setup_pts(ledger)

    def bonus(points: int) -> pb.TransferMetadata:
        return pb.TransferMetadata(partner_id="retailer", tier_bonus_points=points)

    commit(ledger, posted(unique("before"), issuance, wallet, 1000, metadata=bonus(500)))
    earn = commit(ledger, posted(unique("earn"), issuance, wallet, 150, metadata=bonus(50)))
    commit(ledger, posted(unique("earn"), issuance, wallet, 40, metadata=bonus(15)))
    commit(ledger, posted(unique("plain"), issuance, wallet, 10))
    returned = posted(
        unique("reversal"),
        wallet,
        issuance,
        60,
        code=pb.TRANSFER_CODE_REVERSAL,
        reverses_transfer_id=earn.id,
        metadata=bonus(20),
    )
    commit(ledger, returned)
    commit(ledger, posted(unique("redeem"), wallet, shop, 5, code=pb.TRANSFER_CODE_REDEEM))
    after = commit(ledger, posted(unique("after"), issuance, wallet, 7, metadata=bonus(7)))

    summary = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(
            start_time=earn.commit_time,
            end_time=after.commit_time,
            account_ids=[issuance, wallet, shop],
            include_tier_bonus_points=True,
        ),
        timeout=TIMEOUT,
    )
    got = {
        (line.account_id, line.code): (line.debits_posted, line.credits_posted, line.tier_bonus_points)
        for line in summary.lines
    }
    assert got == {
        (issuance, pb.TRANSFER_CODE_EARN): (200, 0, 65),
        (issuance, pb.TRANSFER_CODE_REVERSAL): (0, 60, 20),
        (wallet, pb.TRANSFER_CODE_EARN): (0, 200, 65),
        (wallet, pb.TRANSFER_CODE_REVERSAL): (60, 0, 20),
        (wallet, pb.TRANSFER_CODE_REDEEM): (5, 0, 0),
        (shop, pb.TRANSFER_CODE_REDEEM): (0, 5, 0),
    }
    # Without asking for it, the same figures with a bonus of 0 (the entries alone answer).
    plain = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(
            start_time=earn.commit_time, end_time=after.commit_time, account_ids=[issuance, wallet, shop]
        ),
        timeout=TIMEOUT,
    )
    assert {
        (line.account_id, line.code): (line.debits_posted, line.credits_posted, line.tier_bonus_points)
        for line in plain.lines
    } == {key: (debits, credits, 0) for key, (debits, credits, _) in got.items()}


def test_activity_summary_splits_reversals_by_the_commit_time_of_their_originals(ledger):
    """Each REVERSAL line counts the reversals whose original committed in one window of the
    bounds: earn 1 at the first bound and earn 2 at the second, returned in parts, give two lines;
    a reversal naming no original is window 0; other codes are never split."""
    issuance, (wallet, _) = setup_pts(ledger)
    first = commit(ledger, posted(unique("earn"), issuance, wallet, 100))
    second = commit(ledger, posted(unique("earn"), issuance, wallet, 50))

    def returned(original, amount):
        return commit(
            ledger,
            posted(
                unique("return"),
                wallet,
                issuance,
                amount,
                code=pb.TRANSFER_CODE_REVERSAL,
                reverses_transfer_id=original,
            ),
        )

    returned(first.id, 10)
    returned(first.id, 5)
    returned(second.id, 7)
    returned("", 2)
    after = commit(ledger, posted(unique("after"), issuance, wallet, 1))
    summary = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(
            start_time=first.commit_time,
            end_time=after.commit_time,
            account_ids=[issuance],
            include_tier_bonus_points=True,
            reversal_original_time_bounds=[first.commit_time, second.commit_time],
        ),
        timeout=TIMEOUT,
    )
    got = {
        (line.code, line.reversal_original_window): (line.debits_posted, line.credits_posted, line.transfer_count)
        for line in summary.lines
    }
    assert got == {
        (pb.TRANSFER_CODE_EARN, 0): (150, 0, 2),
        (pb.TRANSFER_CODE_REVERSAL, 0): (0, 2, 1),
        (pb.TRANSFER_CODE_REVERSAL, 1): (0, 15, 2),
        (pb.TRANSFER_CODE_REVERSAL, 2): (0, 7, 1),
    }
    assert len(summary.lines) == len(got)


@pytest.mark.parametrize(
    ("bounds_us", "reason"),
    [([5, 5], "INVALID_TIME_BOUNDS"), ([7, 3], "INVALID_TIME_BOUNDS"), (list(range(1_001)), "INVALID_LOOKUP_SIZE")],
)
def test_activity_summary_reversal_bounds_must_ascend_strictly_and_be_at_most_1000(ledger, bounds_us, reason):
    start_us = time.time_ns() // 1000
    error = rpc_error(
        ledger.GetActivitySummary,
        pb.GetActivitySummaryRequest(
            start_time=timestamp_from_micros(start_us),
            end_time=timestamp_from_micros(start_us + 1),
            reversal_original_time_bounds=[timestamp_from_micros(b) for b in bounds_us],
        ),
    )
    assert (error.code(), error_info_of(error).reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_activity_summary_last_commit_sequence_is_the_highest_in_the_window(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    earn = commit(ledger, posted(unique("earn"), issuance, wallet, 100))
    hold = commit(ledger, pending(unique("hold"), wallet, shop, 40))
    after = commit(ledger, posted(unique("after"), issuance, wallet, 7))
    summary = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(start_time=earn.commit_time, end_time=after.commit_time), timeout=TIMEOUT
    )
    assert summary.last_commit_sequence == hold.commit_sequence


@pytest.mark.parametrize("end_offset_us", [0, -1_000_000])
def test_activity_summary_end_not_after_start_is_invalid_argument(ledger, end_offset_us):
    start_us = time.time_ns() // 1000
    error = rpc_error(
        ledger.GetActivitySummary,
        pb.GetActivitySummaryRequest(
            start_time=timestamp_from_micros(start_us), end_time=timestamp_from_micros(start_us + end_offset_us)
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info_of(error)
    assert info.reason == "INVALID_TIME_RANGE"
    assert info.metadata["field"] == "end_time"


@pytest.mark.parametrize(
    ("call", "build"),
    [
        ("GetBalances", lambda w: pb.GetBalancesRequest(account_ids=[w], as_of_time=Timestamp(seconds=-(10**15)))),
        (
            "ListAccountEntries",
            lambda w: pb.ListAccountEntriesRequest(account_id=w, start_time=Timestamp(seconds=10**15)),
        ),
        ("ListAccountEntries", lambda w: pb.ListAccountEntriesRequest(account_id=w, end_time=Timestamp(nanos=-1))),
        (
            "ListAccountEntries",
            lambda w: pb.ListAccountEntriesRequest(
                account_id=w, page_token=base64.urlsafe_b64encode(b'{"before_sequence": 1e30}').decode()
            ),
        ),
        (
            "ListAccountEntries",
            lambda w: pb.ListAccountEntriesRequest(
                account_id=w,
                page_token=base64.urlsafe_b64encode(b'{"before_sequence": 10000000000000000000000}').decode(),
            ),
        ),
    ],
)
def test_out_of_range_times_and_cursors_are_invalid_argument(ledger, call, build):
    """Found in review: on SQLite these reached the driver and came back INTERNAL."""
    _, (wallet, _) = setup_pts(ledger)
    error = rpc_error(getattr(ledger, call), build(wallet))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error


def test_activity_summary_groups_by_store_with_counts_when_asked(ledger):
    """group_by_store: one line per account, code and the transfer's store, in the same aggregate."""
    issuance, (wallet, shop) = setup_pts(ledger)

    def at(store: str) -> pb.TransferMetadata:
        return pb.TransferMetadata(partner_id="retailer", store_id=store)

    earn = commit(ledger, posted(unique("earn"), issuance, wallet, 100, metadata=at("north")))
    commit(ledger, posted(unique("earn"), issuance, wallet, 40, metadata=at("north")))
    commit(ledger, posted(unique("earn"), issuance, wallet, 7, metadata=at("south")))
    commit(ledger, posted(unique("redeem"), wallet, shop, 5, code=pb.TRANSFER_CODE_REDEEM, metadata=at("south")))
    after = commit(ledger, posted(unique("after"), issuance, wallet, 1, metadata=at("north")))

    summary = ledger.GetActivitySummary(
        pb.GetActivitySummaryRequest(
            start_time=earn.commit_time, end_time=after.commit_time, account_ids=[issuance, shop], group_by_store=True
        ),
        timeout=TIMEOUT,
    )
    got = [
        (line.account_id, line.code, line.store_id, line.debits_posted, line.credits_posted, line.transfer_count)
        for line in summary.lines
    ]
    assert got == sorted(
        [
            (issuance, pb.TRANSFER_CODE_EARN, "north", 140, 0, 2),
            (issuance, pb.TRANSFER_CODE_EARN, "south", 7, 0, 1),
            (shop, pb.TRANSFER_CODE_REDEEM, "south", 0, 5, 1),
        ]
    )
