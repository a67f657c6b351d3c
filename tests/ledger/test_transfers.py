"""CreateTransfers over real gRPC: idempotency, holds, linked chains, reversals, bad input."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as pb
from services.common.errors import error_info_of
from services.ledger import limits
from tests.ledger.helpers import (
    CREATED,
    EXISTS,
    FAILED,
    balance,
    pending,
    post,
    posted,
    setup_pts,
    transfer,
    unique,
    void,
)
from tests.support.tls import channel as tls_channel


def _trial(ledger):
    return ledger.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=10)


def _find(ledger, *ids):
    return list(ledger.GetTransfers(pb.GetTransfersRequest(ids=list(ids)), timeout=10).transfers)


# --- idempotency -----------------------------------------------------------------------------


def test_retry_with_same_id_and_content_returns_the_first_result_without_a_second_effect(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    item = posted("earn-retry", issuance, wallet, 120, metadata=pb.TransferMetadata(receipt_id="r-1"))
    [first] = transfer(ledger, item)
    [second] = transfer(ledger, item)
    [third] = transfer(ledger, item, item)[1:]
    assert first.status == CREATED
    assert second.status == EXISTS and third.status == EXISTS
    assert second.transfer == first.transfer
    assert balance(ledger, wallet).posted == 120


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("amount", {"amount": 121}),
        ("credit_account_id", {"credit_account_id": "OTHER"}),
        ("code", {"code": pb.TRANSFER_CODE_ADJUSTMENT}),
        ("metadata.receipt_id", {"metadata": pb.TransferMetadata(receipt_id="r-2")}),
        ("metadata.tier_bonus_points", {"metadata": pb.TransferMetadata(receipt_id="r-1", tier_bonus_points=20)}),
    ],
)
def test_retry_with_same_id_but_different_content_fails_and_names_the_field(ledger, field, change):
    issuance, (wallet, other) = setup_pts(ledger)
    base = {"metadata": pb.TransferMetadata(receipt_id="r-1")}
    [first] = transfer(ledger, posted("earn-x", issuance, wallet, 120, **base))
    assert first.status == CREATED
    if change.get("credit_account_id") == "OTHER":
        change = {"credit_account_id": other}
    args = {"transfer_id": "earn-x", "debit": issuance, "credit": wallet, "amount": 120, **base}
    if "amount" in change:
        args["amount"] = change["amount"]
    if "credit_account_id" in change:
        args["credit"] = change["credit_account_id"]
    extra = {k: v for k, v in change.items() if k in ("code", "metadata")}
    kwargs = {k: v for k, v in args.items() if k not in ("transfer_id", "debit", "credit", "amount")}
    kwargs.update(extra)
    [retry] = transfer(ledger, posted(args["transfer_id"], args["debit"], args["credit"], args["amount"], **kwargs))
    assert retry.status == FAILED
    assert retry.failure_reason == pb.FAILURE_REASON_ID_REUSED_WITH_DIFFERENT_CONTENT
    assert retry.failure_field == field
    assert balance(ledger, wallet).posted == 120


def test_tier_bonus_points_are_stored_and_read_back_with_the_transfer(ledger):
    """TransferMetadata.tier_bonus_points (0..amount) round-trips through the journal: in the
    create answer, GetTransfers and an exact retry; a reversal carries its own share."""
    issuance, (wallet, _) = setup_pts(ledger)
    earn_id, reversal_id = unique("earn-tier"), unique("reverse-tier")
    metadata = pb.TransferMetadata(receipt_id="r-1", member_id="m-1", tier_bonus_points=30)
    [first] = transfer(ledger, posted(earn_id, issuance, wallet, 150, metadata=metadata))
    assert first.status == CREATED and first.transfer.metadata.tier_bonus_points == 30
    [retry] = transfer(ledger, posted(earn_id, issuance, wallet, 150, metadata=metadata))
    assert retry.status == EXISTS and retry.transfer.metadata.tier_bonus_points == 30
    back = posted(
        reversal_id,
        wallet,
        issuance,
        50,
        code=pb.TRANSFER_CODE_REVERSAL,
        reverses_transfer_id=earn_id,
        metadata=pb.TransferMetadata(receipt_id="r-1", tier_bonus_points=10),
    )
    assert transfer(ledger, back)[0].status == CREATED
    found = {item.id: item.metadata.tier_bonus_points for item in _find(ledger, earn_id, reversal_id)}
    assert found == {earn_id: 30, reversal_id: 10}
    plain = unique("earn-plain")
    transfer(ledger, posted(plain, issuance, wallet, 5))
    assert _find(ledger, plain)[0].metadata.tier_bonus_points == 0


def test_a_failed_item_retried_returns_the_same_failure_even_after_funds_arrive(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    [spend] = transfer(ledger, posted("spend-1", wallet, shop, 50, code=pb.TRANSFER_CODE_REDEEM))
    assert spend.failure_reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS
    transfer(ledger, posted("earn-1", issuance, wallet, 500))
    [retry] = transfer(ledger, posted("spend-1", wallet, shop, 50, code=pb.TRANSFER_CODE_REDEEM))
    assert retry.status == FAILED and retry.failure_reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS
    assert balance(ledger, wallet).posted == 500


def test_retry_after_a_client_deadline_does_not_double_post(ledger):
    """The client gives up while the server is still writing; the retry must not post again."""
    issuance, wallets = setup_pts(ledger, wallets=4)
    # A full batch takes far longer than 50 ms, so the deadline always expires mid-write.
    items = [posted(f"deadline-{n}", issuance, wallets[n % 4], 1) for n in range(limits.BATCH_ITEMS_MAX)]
    with pytest.raises(grpc.RpcError) as raised:
        ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=0.05)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    retry = ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=120).results
    assert {r.status for r in retry} <= {CREATED, EXISTS}
    assert sum(balance(ledger, w).posted for w in wallets) == limits.BATCH_ITEMS_MAX
    again = ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=120).results
    assert {r.status for r in again} == {EXISTS}


# --- no overdraft and currencies --------------------------------------------------------------


def test_no_overdraft_wallet_refuses_spending_more_than_available(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100))
    [ok, refused] = transfer(
        ledger,
        posted("spend-a", wallet, shop, 60, code=pb.TRANSFER_CODE_REDEEM),
        posted("spend-b", wallet, shop, 60, code=pb.TRANSFER_CODE_REDEEM),
    )
    assert ok.status == CREATED
    assert refused.failure_reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS
    assert refused.failure_field == "amount"
    assert balance(ledger, wallet).available == 40


def test_transfer_between_currencies_is_refused(ledger):
    issuance, _ = setup_pts(ledger)
    ledger.RegisterCurrency(pb.RegisterCurrencyRequest(currency=pb.Currency(code="MILES", owner_id="air")))
    ledger.CreateAccounts(
        pb.CreateAccountsRequest(
            accounts=[pb.Account(id="miles-w", currency_code="MILES", normal_side=pb.ACCOUNT_SIDE_CREDIT)]
        )
    )
    [result] = transfer(ledger, posted("mixed", issuance, "miles-w", 5))
    assert result.failure_reason == pb.FAILURE_REASON_CURRENCY_MISMATCH
    [unknown] = transfer(ledger, posted("unknown", issuance, "nobody", 5))
    assert unknown.failure_reason == pb.FAILURE_REASON_CREDIT_ACCOUNT_NOT_FOUND


# --- holds ------------------------------------------------------------------------------------


def test_available_balance_counts_pending_debits_and_partial_post_releases_the_rest(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 1000))
    transfer(ledger, pending("hold", wallet, shop, 400))
    held = balance(ledger, wallet)
    assert (held.posted, held.pending, held.available) == (1000, 400, 600)
    [refused] = transfer(ledger, posted("spend", wallet, shop, 700, code=pb.TRANSFER_CODE_REDEEM))
    assert refused.failure_reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS
    [captured] = transfer(ledger, post("capture", "hold", 250))
    assert captured.status == CREATED and captured.transfer.amount == 250
    after = balance(ledger, wallet)
    assert (after.posted, after.pending, after.available) == (750, 0, 750)
    assert balance(ledger, shop).posted == 250
    [state] = _find(ledger, "hold")
    assert state.hold_state == pb.HOLD_STATE_POSTED


def test_post_more_than_held_is_refused(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100), pending("hold", wallet, shop, 50))
    [result] = transfer(ledger, post("capture", "hold", 51))
    assert result.failure_reason == pb.FAILURE_REASON_POST_AMOUNT_EXCEEDS_PENDING


def test_pending_transfer_resolves_exactly_once_under_concurrent_post_and_void(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100), pending("hold", wallet, shop, 80))
    results = []

    def resolve(item):
        results.extend(transfer(ledger, item))

    threads = [
        threading.Thread(target=resolve, args=(item,))
        for item in [post(f"capture-{n}", "hold", 80) for n in range(4)] + [void(f"void-{n}", "hold") for n in range(4)]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.status == CREATED for r in results) == 1
    assert all(
        r.failure_reason
        in (pb.FAILURE_REASON_PENDING_TRANSFER_ALREADY_POSTED, pb.FAILURE_REASON_PENDING_TRANSFER_ALREADY_VOIDED)
        for r in results
        if r.status != CREATED
    )
    final = balance(ledger, wallet)
    assert final.pending == 0 and final.posted in (20, 100)


def test_expired_hold_cannot_be_posted_and_its_amount_is_free_again(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100), pending("hold", wallet, shop, 90, timeout_seconds=1))
    assert balance(ledger, wallet).available == 10
    time.sleep(1.2)  # the server's clock decides; no client time is sent
    assert balance(ledger, wallet).available == 100
    [late] = transfer(ledger, post("capture", "hold", 90))
    assert late.status == FAILED and late.failure_reason == pb.FAILURE_REASON_HOLD_EXPIRED
    [spend] = transfer(ledger, posted("spend", wallet, shop, 100, code=pb.TRANSFER_CODE_REDEEM))
    assert spend.status == CREATED
    [state] = _find(ledger, "hold")
    assert state.hold_state == pb.HOLD_STATE_EXPIRED
    assert _trial(ledger).balanced


def test_balance_as_of_a_time_after_expiry_shows_the_hold_released_even_before_the_sweep(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100))
    [hold] = transfer(ledger, pending("hold", wallet, shop, 60, timeout_seconds=1))
    expire_us = hold.transfer.expire_time.seconds * 1_000_000 + hold.transfer.expire_time.nanos // 1000
    time.sleep(1.1)
    as_of = pb.GetBalancesRequest(account_ids=[wallet])
    as_of.as_of_time.FromMicroseconds(expire_us + 1)
    past = ledger.GetBalances(as_of, timeout=10).balances[0]
    assert (past.posted, past.pending, past.available) == (100, 0, 100)
    before = pb.GetBalancesRequest(account_ids=[wallet])
    before.as_of_time.FromMicroseconds(expire_us - 1)
    held = ledger.GetBalances(before, timeout=10).balances[0]
    assert (held.posted, held.pending, held.available) == (100, 60, 40)


def test_void_releases_the_whole_hold(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100), pending("hold", wallet, shop, 70))
    [voided] = transfer(ledger, void("void", "hold"))
    assert voided.status == CREATED and voided.transfer.amount == 70
    assert balance(ledger, wallet).available == 100
    [again] = transfer(ledger, void("void-2", "hold"))
    assert again.failure_reason == pb.FAILURE_REASON_PENDING_TRANSFER_ALREADY_VOIDED


# --- reversals --------------------------------------------------------------------------------


def test_reversal_swaps_accounts_and_cannot_exceed_the_original(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    transfer(ledger, posted("earn", issuance, wallet, 100))
    rev = dict(code=pb.TRANSFER_CODE_REVERSAL, reverses_transfer_id="earn")
    [wrong_way] = transfer(ledger, posted("rev-0", issuance, wallet, 10, **rev))
    assert wrong_way.failure_reason == pb.FAILURE_REASON_REVERSAL_ACCOUNTS_MISMATCH
    [part] = transfer(ledger, posted("rev-1", wallet, issuance, 60, **rev))
    assert part.status == CREATED
    [too_much] = transfer(ledger, posted("rev-2", wallet, issuance, 41, **rev))
    assert too_much.failure_reason == pb.FAILURE_REASON_REVERSAL_EXCEEDS_ORIGINAL
    [rest] = transfer(ledger, posted("rev-3", wallet, issuance, 40, **rev))
    assert rest.status == CREATED
    assert balance(ledger, wallet).posted == 0


# --- linked chains ----------------------------------------------------------------------------


def test_failure_anywhere_in_a_linked_chain_leaves_no_trace(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("seed", issuance, wallet, 100))
    before_wallet, before_shop = balance(ledger, wallet), balance(ledger, shop)
    sequence_before = _trial(ledger).commit_sequence
    chain = [
        posted("c-1", issuance, wallet, 10, linked=True),
        pending("c-2", wallet, shop, 20, linked=True),
        posted("c-3", wallet, shop, 500, code=pb.TRANSFER_CODE_REDEEM, linked=True),  # fails
        posted("c-4", issuance, shop, 5),
    ]
    results = transfer(ledger, *chain)
    assert [r.status for r in results] == [FAILED] * 4
    assert results[2].failure_reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS
    assert {results[i].failure_reason for i in (0, 1, 3)} == {pb.FAILURE_REASON_LINKED_EVENT_FAILED}
    assert _find(ledger, "c-1", "c-2", "c-3", "c-4") == []
    assert balance(ledger, wallet).posted == before_wallet.posted
    assert balance(ledger, wallet).pending == before_wallet.pending
    assert balance(ledger, shop).posted == before_shop.posted
    assert _trial(ledger).commit_sequence == sequence_before


def test_linked_chain_succeeds_as_a_whole_and_independent_items_are_unaffected(ledger):
    issuance, (wallet, shop) = setup_pts(ledger)
    results = transfer(
        ledger,
        posted("solo-bad", wallet, shop, 5, code=pb.TRANSFER_CODE_REDEEM),
        posted("l-1", issuance, wallet, 10, linked=True),
        posted("l-2", wallet, shop, 10, code=pb.TRANSFER_CODE_REDEEM),
        posted("solo-good", issuance, wallet, 1),
    )
    assert [r.status for r in results] == [FAILED, CREATED, CREATED, CREATED]
    assert balance(ledger, shop).posted == 10


def test_open_chain_at_the_end_of_a_batch_fails(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    results = transfer(ledger, posted("o-1", issuance, wallet, 10, linked=True))
    assert results[0].failure_reason == pb.FAILURE_REASON_LINKED_CHAIN_OPEN
    assert _find(ledger, "o-1") == []


# --- bad input --------------------------------------------------------------------------------


def _bad_items(issuance, wallet):
    ok = {
        "debit_account_id": issuance,
        "credit_account_id": wallet,
        "currency_code": "PTS",
        "kind": pb.TRANSFER_KIND_POSTED,
        "code": pb.TRANSFER_CODE_EARN,
        "amount": 5,
    }
    return {
        "missing id": pb.TransferInput(**ok),
        "zero amount": pb.TransferInput(id="b", **{**ok, "amount": 0}),
        "negative amount": pb.TransferInput(id="b", **{**ok, "amount": -5}),
        "overflowing amount": pb.TransferInput(id="b", **{**ok, "amount": limits.AMOUNT_MAX + 1}),
        "unknown kind": pb.TransferInput(id="b", **{**ok, "kind": 99}),
        "unknown code": pb.TransferInput(id="b", **{**ok, "code": 42}),
        "missing code": pb.TransferInput(id="b", **{**ok, "code": 0}),
        "missing kind": pb.TransferInput(id="b", **{**ok, "kind": 0}),
        "overlong id": pb.TransferInput(id="x" * 129, **ok),
        "bad id characters": pb.TransferInput(id="has space", **ok),
        "overlong metadata": pb.TransferInput(id="b", metadata=pb.TransferMetadata(receipt_id="r" * 129), **ok),
        "missing debit": pb.TransferInput(id="b", **{**ok, "debit_account_id": ""}),
        "bad currency": pb.TransferInput(id="b", **{**ok, "currency_code": "pts"}),
        "pending without timeout": pb.TransferInput(id="b", **{**ok, "kind": pb.TRANSFER_KIND_PENDING}),
        "post without pending id": pb.TransferInput(id="b", amount=5, kind=pb.TRANSFER_KIND_POST_PENDING),
        "void with amount": pb.TransferInput(id="b", pending_id="p", amount=5, kind=pb.TRANSFER_KIND_VOID_PENDING),
        "system id prefix": pb.TransferInput(id="#expire:x", **ok),
        "NUL in metadata": pb.TransferInput(id="b", metadata=pb.TransferMetadata(receipt_id="r\x00"), **ok),
        "control character in metadata": pb.TransferInput(id="b", metadata=pb.TransferMetadata(store_id="s\n"), **ok),
        "tier bonus above amount": pb.TransferInput(id="b", metadata=pb.TransferMetadata(tier_bonus_points=6), **ok),
        "negative tier bonus": pb.TransferInput(id="b", metadata=pb.TransferMetadata(tier_bonus_points=-1), **ok),
    }


def test_bad_input_is_invalid_argument_with_a_reason_and_writes_nothing(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    sequence_before = _trial(ledger).commit_sequence
    for name, bad in _bad_items(issuance, wallet).items():
        valid_first = posted(unique("valid"), issuance, wallet, 5)
        with pytest.raises(grpc.RpcError) as raised:
            ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=[valid_first, bad]), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        info = error_info_of(raised.value)
        assert info is not None and info.reason and info.metadata["index"] == "1", name
        assert _find(ledger, valid_first.id) == [], name
    assert _trial(ledger).commit_sequence == sequence_before
    assert balance(ledger, wallet).posted == 0


def test_empty_and_oversize_batches_are_invalid_argument(ledger):
    issuance, (wallet, _) = setup_pts(ledger)
    for count in (0, limits.BATCH_ITEMS_MAX + 1):
        items = [posted(f"big-{n}", issuance, wallet, 1) for n in range(count)]
        with pytest.raises(grpc.RpcError) as raised:
            ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_of(raised.value).reason in ("EMPTY_BATCH", "BATCH_TOO_LARGE")
    assert balance(ledger, wallet).posted == 0


def test_a_full_batch_of_the_maximum_size_is_applied(ledger):
    issuance, wallets = setup_pts(ledger, wallets=10)
    items = [posted(f"max-{n}", issuance, wallets[n % 10], 1) for n in range(limits.BATCH_ITEMS_MAX)]
    results = ledger.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=120).results
    assert len(results) == limits.BATCH_ITEMS_MAX and all(r.status == CREATED for r in results)
    sequences = [r.transfer.commit_sequence for r in results]
    assert sequences == list(range(sequences[0], sequences[0] + limits.BATCH_ITEMS_MAX))
    assert sum(balance(ledger, w).posted for w in wallets) == limits.BATCH_ITEMS_MAX


def test_bad_accounts_and_currencies_are_invalid_argument_and_write_nothing(ledger):
    setup_pts(ledger)
    bad_accounts = {
        "unknown side": pb.Account(id="acc-x", currency_code="PTS", normal_side=7),
        "missing side": pb.Account(id="acc-x", currency_code="PTS"),
        "overlong id": pb.Account(id="a" * 129, currency_code="PTS", normal_side=pb.ACCOUNT_SIDE_CREDIT),
        "overlong kind": pb.Account(id="acc-x", currency_code="PTS", normal_side=pb.ACCOUNT_SIDE_CREDIT, kind="k" * 65),
    }
    for name, bad in bad_accounts.items():
        good = pb.Account(id=unique("good"), currency_code="PTS", normal_side=pb.ACCOUNT_SIDE_CREDIT)
        with pytest.raises(grpc.RpcError) as raised:
            ledger.CreateAccounts(pb.CreateAccountsRequest(accounts=[good, bad]), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert error_info_of(raised.value).reason, name
        with pytest.raises(grpc.RpcError) as missing:
            ledger.GetAccount(pb.GetAccountRequest(account_id=good.id), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND, name
    for bad_currency in (pb.Currency(code="x", owner_id="operator"), pb.Currency(code="ABC", scale=9, owner_id="o")):
        with pytest.raises(grpc.RpcError) as raised:
            ledger.RegisterCurrency(pb.RegisterCurrencyRequest(currency=bad_currency), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    codes = [c.code for c in ledger.ListCurrencies(pb.ListCurrenciesRequest(), timeout=10).currencies]
    assert codes == ["PTS"]


def test_retrying_a_failed_linked_chain_returns_the_same_answers_and_harms_no_one(ledger):
    """Found in review: re-remembering the chain's stored failure broke the unique id and turned
    the retry, and every call merged with it, into INTERNAL."""
    issuance, (wallet, shop) = setup_pts(ledger)
    chain = [
        posted("conv-out", wallet, shop, 50, code=pb.TRANSFER_CODE_CONVERSION, linked=True),
        posted("conv-in", issuance, wallet, 5, code=pb.TRANSFER_CODE_CONVERSION),
    ]
    first = transfer(ledger, *chain)
    assert [(r.status, r.failure_reason) for r in first] == [
        (FAILED, pb.FAILURE_REASON_INSUFFICIENT_FUNDS),
        (FAILED, pb.FAILURE_REASON_LINKED_EVENT_FAILED),
    ]
    innocent = []
    threads = [
        threading.Thread(target=lambda n=n: innocent.extend(transfer(ledger, posted(f"ok-{n}", issuance, shop, 1))))
        for n in range(20)
    ]
    for thread in threads:
        thread.start()
    for _ in range(5):
        again = transfer(ledger, *chain, *chain)  # the same chain twice in one call, too
        assert [(r.status, r.failure_reason) for r in again[:2]] == [(r.status, r.failure_reason) for r in first]
        assert [(r.status, r.failure_reason) for r in again[2:]] == [(r.status, r.failure_reason) for r in first]
    for thread in threads:
        thread.join()
    assert len(innocent) == 20 and all(r.status == CREATED for r in innocent)
    assert balance(ledger, wallet).posted == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_post_that_waited_on_a_lock_past_the_timeout_finds_the_hold_expired(ledger, ledger_database_url):
    """Found in review: the clock used to be read before the row locks, so a post that waited on a
    slow batch's lock past expiry still posted a hold every read had already called EXPIRED."""
    from sqlalchemy import create_engine, text

    issuance, (wallet, shop) = setup_pts(ledger)
    transfer(ledger, posted("fund", issuance, wallet, 100), pending("hold", wallet, shop, 100, timeout_seconds=1))
    engine = create_engine(ledger_database_url)
    try:
        with engine.connect() as blocker:
            blocking = blocker.begin()
            blocker.execute(text("SELECT 1 FROM account_balances WHERE account_id = :a FOR UPDATE"), {"a": shop})
            results = []
            poster = threading.Thread(target=lambda: results.extend(transfer(ledger, post("capture", "hold", 100))))
            poster.start()
            time.sleep(1.5)  # the timeout passes while the post waits for the lock
            [seen] = _find(ledger, "hold")
            assert seen.hold_state == pb.HOLD_STATE_EXPIRED
            blocking.commit()
            poster.join(timeout=30)
    finally:
        engine.dispose()
    assert results[0].status == FAILED and results[0].failure_reason == pb.FAILURE_REASON_HOLD_EXPIRED
    assert balance(ledger, wallet).available == 100


def test_a_backlog_of_expired_holds_never_refuses_a_spend_they_no_longer_block(backend, tmp_path, monkeypatch):
    """With the sweeper stopped and more expired holds than one scan page, a batch touching the
    account still releases every one of them before deciding (no wrong, remembered refusal)."""

    from coalition.ledger.v1 import ledger_pb2_grpc
    from services.ledger import limits as ledger_limits
    from tests.support.databases import new_database_url
    from tests.support.servers import start_ledger_thread

    monkeypatch.setattr(ledger_limits, "EXPIRY_SWEEP_SECONDS", 3600.0)
    monkeypatch.setattr(ledger_limits, "EXPIRY_SWEEP_HOLDS_MAX", 2)
    url, cleanup = new_database_url(backend, tmp_path, "backlog")
    server = start_ledger_thread(url)
    try:
        with tls_channel(server.address) as channel:
            ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
            issuance, (wallet, shop) = setup_pts(ledger)
            holds = [pending(f"h-{n}", wallet, shop, 10, timeout_seconds=1) for n in range(5)]
            transfer(ledger, posted("fund", issuance, wallet, 50), *holds)
            assert balance(ledger, wallet).available == 0
            time.sleep(1.2)
            [spend] = transfer(ledger, posted("spend", wallet, shop, 50, code=pb.TRANSFER_CODE_REDEEM))
            assert spend.status == CREATED, spend
            assert {t.hold_state for t in _find(ledger, *(h.id for h in holds))} == {pb.HOLD_STATE_EXPIRED}
            assert ledger.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=10).balanced
    finally:
        server.stop()
        cleanup()
