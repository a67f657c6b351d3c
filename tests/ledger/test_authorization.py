"""The ledger authorizes by the caller's certificate (services/ledger/authorization.py).

Every call here travels over mutual TLS with a certificate of the session's development CA;
only the identity in it changes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

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
    post,
    posted,
    register_currency,
    unique,
)
from tests.support.tls import channel as tls_channel

MINT = 1_000_000


@pytest.fixture
def stubs(ledger_server):
    """One stub per identity, each on its own TLS connection."""
    channels = {
        identity: tls_channel(ledger_server.address, identity)
        for identity in ("operator", "partners", "settlement", "pos-demo")
    }
    yield {identity: ledger_pb2_grpc.LedgerServiceStub(channel) for identity, channel in channels.items()}
    for channel in channels.values():
        channel.close()


@pytest.fixture
def books(stubs):
    """As partners and settlement lay them out: PTS issuance and wallet, EUR settlement accounts."""
    operator = stubs["operator"]
    register_currency(operator, "PTS")
    register_currency(operator, "EUR", scale=2)
    names = {
        "issuance": unique("issuance:PTS"),
        "wallet": unique("wallet:PTS"),
        "partner_settlement": unique("settlement:EUR"),
        "operator_settlement": unique("settlement:EUR:operator"),
    }
    create_accounts(
        operator,
        account(names["issuance"], DEBIT, kind="partner_issuance", owner="p1"),
        account(names["wallet"], CREDIT, no_overdraft=True, kind="member_wallet", owner="m1"),
        account(names["partner_settlement"], DEBIT, currency="EUR", kind="partner_settlement", owner="p1"),
        account(names["operator_settlement"], CREDIT, currency="EUR", kind="operator_settlement", owner="operator"),
    )
    return names


def _refused(call, request) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=TIMEOUT)
    info = error_info_of(raised.value)
    return raised.value.code(), info.reason if info else "", raised.value.details()


def _written(stubs, *transfer_ids) -> list[str]:
    found = stubs["operator"].GetTransfers(pb.GetTransfersRequest(ids=list(transfer_ids)), timeout=TIMEOUT)
    return [t.id for t in found.transfers]


def _wallet_balance(stubs, wallet_id) -> int:
    (balance,) = stubs["operator"].GetBalances(pb.GetBalancesRequest(account_ids=[wallet_id]), timeout=TIMEOUT).balances
    return balance.credits_posted - balance.debits_posted


def test_a_million_point_mint_by_anyone_but_partners_is_refused_and_writes_nothing(stubs, books):
    # Without a client certificate the TLS handshake itself fails: tests/common/test_mutual_tls.py.
    mint_id = unique("mint")
    mint = pb.CreateTransfersRequest(transfers=[posted(mint_id, books["issuance"], books["wallet"], MINT)])
    # A certificate the CA signed, for an identity the ledger does not serve (a till's).
    code, reason, message = _refused(stubs["pos-demo"].CreateTransfers, mint)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "UNKNOWN_CALLER")
    assert "pos-demo" in message
    # Settlement's certificate may not post EARN.
    code, reason, message = _refused(stubs["settlement"].CreateTransfers, mint)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED")
    assert "EARN" in message and "SETTLEMENT" in message
    assert _written(stubs, mint_id) == []
    assert _wallet_balance(stubs, books["wallet"]) == 0
    # The same transfer from partners' identity is an earn, and is created.
    (result,) = stubs["partners"].CreateTransfers(mint, timeout=TIMEOUT).results
    assert result.status == CREATED
    assert _wallet_balance(stubs, books["wallet"]) == MINT


def test_partners_may_not_post_settlement_and_settlement_may_not_post_earn(stubs, books):
    settle = posted(
        unique("settle"),
        books["partner_settlement"],
        books["operator_settlement"],
        500,
        code=pb.TRANSFER_CODE_SETTLEMENT,
        currency="EUR",
    )
    code, reason, message = _refused(stubs["partners"].CreateTransfers, pb.CreateTransfersRequest(transfers=[settle]))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED")
    assert "'partners' may not post SETTLEMENT" in message
    # An allowed code on accounts outside its kinds is refused too.
    earn_on_settlement = posted(
        unique("earn"), books["partner_settlement"], books["operator_settlement"], 500, currency="EUR"
    )
    code, reason, message = _refused(
        stubs["partners"].CreateTransfers, pb.CreateTransfersRequest(transfers=[earn_on_settlement])
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED")
    assert "partner_settlement" in message
    earn = posted(unique("earn"), books["issuance"], books["wallet"], 10)
    code, reason, _ = _refused(stubs["settlement"].CreateTransfers, pb.CreateTransfersRequest(transfers=[earn]))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED")
    assert _written(stubs, settle.id, earn_on_settlement.id, earn.id) == []
    # Each may post its own.
    (settled,) = (
        stubs["settlement"].CreateTransfers(pb.CreateTransfersRequest(transfers=[settle]), timeout=TIMEOUT).results
    )
    (earned,) = stubs["partners"].CreateTransfers(pb.CreateTransfersRequest(transfers=[earn]), timeout=TIMEOUT).results
    assert (settled.status, earned.status) == (CREATED, CREATED)


def test_a_call_with_one_forbidden_transfer_is_refused_whole_and_its_merged_neighbours_are_not(stubs, books):
    allowed_id, forbidden_id = unique("earn"), unique("adjust")
    mixed = pb.CreateTransfersRequest(
        transfers=[
            posted(allowed_id, books["issuance"], books["wallet"], 7),
            posted(forbidden_id, books["issuance"], books["wallet"], 7, code=pb.TRANSFER_CODE_ADJUSTMENT),
        ]
    )
    code, reason, message = _refused(stubs["partners"].CreateTransfers, mixed)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED")
    assert "transfers[1]" in message
    assert _written(stubs, allowed_id, forbidden_id) == []
    # Many refused and allowed calls at once: the ledger merges them into shared batches.
    neighbours = [
        pb.CreateTransfersRequest(transfers=[posted(unique("earn"), books["issuance"], books["wallet"], 1)])
        for _ in range(24)
    ]
    refused = [
        pb.CreateTransfersRequest(
            transfers=[
                posted(unique("adjust"), books["issuance"], books["wallet"], 1, code=pb.TRANSFER_CODE_ADJUSTMENT)
            ]
        )
        for _ in range(24)
    ]
    with ThreadPoolExecutor(16) as pool:
        allowed_futures = [pool.submit(stubs["partners"].CreateTransfers, r, timeout=TIMEOUT) for r in neighbours]
        refused_futures = [pool.submit(_refused, stubs["partners"].CreateTransfers, r) for r in refused]
        assert all(f.result().results[0].status == CREATED for f in allowed_futures)
        assert all(f.result()[1] == "TRANSFER_NOT_PERMITTED" for f in refused_futures)
    assert _wallet_balance(stubs, books["wallet"]) == len(neighbours)


def test_capturing_a_hold_is_judged_by_the_hold_it_resolves(stubs, books):
    stubs["partners"].CreateTransfers(
        pb.CreateTransfersRequest(transfers=[posted(unique("earn"), books["issuance"], books["wallet"], 50)]),
        timeout=TIMEOUT,
    )
    # The operator holds points on a member wallet for an adjustment; partners may not capture it.
    hold_id = unique("hold")
    adjust_hold = pending(hold_id, books["wallet"], books["issuance"], 20, code=pb.TRANSFER_CODE_ADJUSTMENT)
    (held,) = (
        stubs["operator"].CreateTransfers(pb.CreateTransfersRequest(transfers=[adjust_hold]), timeout=TIMEOUT).results
    )
    assert held.status == CREATED
    capture = pb.CreateTransfersRequest(transfers=[post(unique("capture"), hold_id, 20)])
    code, reason, message = _refused(stubs["partners"].CreateTransfers, capture)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED")
    assert "ADJUSTMENT" in message
    # Its own redemption hold it may capture.
    redeem_id = unique("redeem")
    stubs["partners"].CreateTransfers(
        pb.CreateTransfersRequest(transfers=[pending(redeem_id, books["wallet"], books["issuance"], 10)]),
        timeout=TIMEOUT,
    )
    (captured,) = (
        stubs["partners"]
        .CreateTransfers(pb.CreateTransfersRequest(transfers=[post(unique("capture"), redeem_id, 10)]), timeout=TIMEOUT)
        .results
    )
    assert captured.status == CREATED


def test_accounts_currencies_and_reads_follow_the_table(stubs, books):
    settlement_account = account(unique("settlement:EUR"), DEBIT, currency="EUR", kind="partner_settlement")
    code, reason, _ = _refused(
        stubs["partners"].CreateAccounts, pb.CreateAccountsRequest(accounts=[settlement_account])
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_NOT_PERMITTED")
    pts_settlement = account(unique("settlement:PTS"), DEBIT, currency="PTS", kind="partner_settlement")
    code, reason, message = _refused(
        stubs["settlement"].CreateAccounts, pb.CreateAccountsRequest(accounts=[pts_settlement])
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_NOT_PERMITTED")
    assert "EUR" in message
    (created,) = (
        stubs["settlement"]
        .CreateAccounts(pb.CreateAccountsRequest(accounts=[settlement_account]), timeout=TIMEOUT)
        .results
    )
    assert created.status == CREATED
    wallet = account(unique("wallet:PTS"), CREDIT, no_overdraft=True, kind="member_wallet")
    (created,) = stubs["partners"].CreateAccounts(pb.CreateAccountsRequest(accounts=[wallet]), timeout=TIMEOUT).results
    assert created.status == CREATED
    # Member-level reads need an authorized identity; the whole journal is for settlement and the operator.
    watch = pb.WatchTransfersRequest(after_commit_sequence=0)
    for identity, method, request in (
        ("partners", "WatchTransfers", watch),
        ("pos-demo", "WatchTransfers", watch),
        ("pos-demo", "ListAccountEntries", pb.ListAccountEntriesRequest(account_id=books["wallet"])),
        ("pos-demo", "GetBalances", pb.GetBalancesRequest(account_ids=[books["wallet"]])),
        ("partners", "GetTrialBalance", pb.GetTrialBalanceRequest()),
        ("settlement", "RegisterCurrency", pb.RegisterCurrencyRequest(currency=pb.Currency(code="XPTS", owner_id="x"))),
    ):
        call = getattr(stubs[identity], method)
        if method == "WatchTransfers":
            with pytest.raises(grpc.RpcError) as raised:
                next(iter(call(request, timeout=TIMEOUT)))
            code, info = raised.value.code(), error_info_of(raised.value)
            reason = info.reason if info else ""
        else:
            code, reason, _ = _refused(call, request)
        assert code == grpc.StatusCode.PERMISSION_DENIED, (identity, method)
        assert reason in ("METHOD_NOT_PERMITTED", "UNKNOWN_CALLER"), (identity, method, reason)
    stubs["partners"].CreateTransfers(
        pb.CreateTransfersRequest(transfers=[posted(unique("earn"), books["issuance"], books["wallet"], 3)]),
        timeout=TIMEOUT,
    )
    entries = stubs["partners"].ListAccountEntries(
        pb.ListAccountEntriesRequest(account_id=books["wallet"]), timeout=TIMEOUT
    )
    assert len(entries.entries) == 1
    first = next(iter(stubs["settlement"].WatchTransfers(watch, timeout=TIMEOUT)))
    assert len(first.transfers) >= 1


def test_a_code_on_the_request_does_not_launder_someone_elses_hold_or_transfer(stubs, books):
    stubs["partners"].CreateTransfers(
        pb.CreateTransfersRequest(transfers=[posted(unique("earn"), books["issuance"], books["wallet"], 50)]),
        timeout=TIMEOUT,
    )
    hold_id, adjustment_id = unique("hold"), unique("adjust")
    stubs["operator"].CreateTransfers(
        pb.CreateTransfersRequest(
            transfers=[
                pending(hold_id, books["wallet"], books["issuance"], 20, code=pb.TRANSFER_CODE_ADJUSTMENT),
                posted(adjustment_id, books["issuance"], books["wallet"], 5, code=pb.TRANSFER_CODE_ADJUSTMENT),
            ]
        ),
        timeout=TIMEOUT,
    )
    capture_as_earn = post(unique("capture"), hold_id, 20)
    capture_as_earn.code = pb.TRANSFER_CODE_EARN
    void_as_redeem = pb.TransferInput(
        id=unique("void"), pending_id=hold_id, kind=pb.TRANSFER_KIND_VOID_PENDING, code=pb.TRANSFER_CODE_REDEEM
    )
    reversal = posted(
        unique("reverse"),
        books["wallet"],
        books["issuance"],
        5,
        code=pb.TRANSFER_CODE_REVERSAL,
        reverses_transfer_id=adjustment_id,
    )
    for transfer in (capture_as_earn, void_as_redeem, reversal):
        code, reason, message = _refused(
            stubs["partners"].CreateTransfers, pb.CreateTransfersRequest(transfers=[transfer])
        )
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TRANSFER_NOT_PERMITTED"), transfer.id
        assert "ADJUSTMENT" in message
    assert _written(stubs, capture_as_earn.id, void_as_redeem.id, reversal.id) == []
    # Money accounts are settlement's: partners may not make one (it could squat its id).
    squat = account(f"settlement:EUR:{unique('p')}", CREDIT, currency="EUR", kind="member_wallet")
    code, reason, _ = _refused(stubs["partners"].CreateAccounts, pb.CreateAccountsRequest(accounts=[squat]))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCOUNT_NOT_PERMITTED")


def test_a_hold_another_call_creates_in_the_same_batch_is_not_this_callers_to_resolve(
    ledger_database_url, stubs, books
):
    """Merged calls share one transaction: the check sees holds other calls create in it."""
    from services.common.db import Database, DatabaseOptions
    from services.ledger.authorization import GRANTS
    from services.ledger.model import Kind, TransferCommand
    from services.ledger.transfers import TransferRequest, create_transfers

    stubs["partners"].CreateTransfers(
        pb.CreateTransfersRequest(transfers=[posted(unique("earn"), books["issuance"], books["wallet"], 50)]),
        timeout=TIMEOUT,
    )
    hold_id = unique("hold")

    def command(transfer_id, kind, **fields):
        blank = {"debit_account_id": "", "credit_account_id": "", "amount": 0, "currency_code": ""}
        return TransferCommand(id=transfer_id, kind=kind, **{**blank, **fields})

    operators_hold = command(
        hold_id,
        Kind.PENDING,
        debit_account_id=books["wallet"],
        credit_account_id=books["issuance"],
        amount=20,
        currency_code="PTS",
        code=pb.TRANSFER_CODE_ADJUSTMENT,
        timeout_seconds=600,
    )
    settlements_capture = command(unique("capture"), Kind.POST_PENDING, pending_id=hold_id, amount=20, currency_code="")
    own_hold_id = unique("own-hold")
    partners_own = [
        command(
            own_hold_id,
            Kind.PENDING,
            debit_account_id=books["wallet"],
            credit_account_id=books["issuance"],
            amount=10,
            currency_code="PTS",
            code=pb.TRANSFER_CODE_REDEEM,
            timeout_seconds=600,
        ),
        command(unique("capture"), Kind.POST_PENDING, pending_id=own_hold_id, amount=10, currency_code=""),
    ]
    database = Database(DatabaseOptions(url=ledger_database_url, pool_size=2))
    try:
        operator_outcomes, settlement_refusal, partners_outcomes = create_transfers(
            database,
            [
                TransferRequest([operators_hold], GRANTS["operator"]),
                TransferRequest([settlements_capture], GRANTS["settlement"]),
                TransferRequest(partners_own, GRANTS["partners"]),
            ],
        )
    finally:
        database.dispose()
    assert [int(o.status) for o in operator_outcomes] == [CREATED]
    assert settlement_refusal.reason == "TRANSFER_NOT_PERMITTED"
    assert "another call creates in the same batch" in str(settlement_refusal)
    assert [int(o.status) for o in partners_outcomes] == [
        CREATED,
        CREATED,
    ]  # a hold of its own call is judged as its own
    assert _written(stubs, settlements_capture.id) == []
