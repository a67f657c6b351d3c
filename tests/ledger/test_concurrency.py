"""Jepsen-style bank workload over real gRPC on PostgreSQL: many clients, few accounts.

Checks that no no-overdraft wallet ever goes negative, that the total is conserved, and that
each final balance equals exactly what the CREATED results imply (nothing lost, nothing twice).
"""

from __future__ import annotations

import os
import random
import threading
from collections import defaultdict

import pytest

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from tests.ledger.helpers import CREATED, CREDIT, DEBIT, account, create_accounts, posted, register_currency
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_process, start_ledger_thread
from tests.support.tls import channel as tls_channel

SCALE = int(os.environ.get("COALITION_SOAK_SCALE", "1"))  # `make soak` raises it
CLIENTS = 16
TRANSFERS_PER_CLIENT = 250 * SCALE
WALLETS = 5
SEED_PER_WALLET = 2_000


def _open_accounts(stub, run):
    register_currency(stub)
    issuance = f"iss-{run}"
    wallets = [f"w{n}-{run}" for n in range(WALLETS)]
    create_accounts(stub, account(issuance, DEBIT), *(account(w, CREDIT, no_overdraft=True) for w in wallets))
    seed = [posted(f"seed-{w}", issuance, w, SEED_PER_WALLET) for w in wallets]
    assert all(r.status == CREATED for r in stub.CreateTransfers(pb.CreateTransfersRequest(transfers=seed)).results)
    return wallets


def _client(address, wallets, client_number, results, observed_negative):
    rng = random.Random(client_number)
    with tls_channel(address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        for n in range(TRANSFERS_PER_CLIENT):
            debit, credit = rng.sample(wallets, 2)
            amount = rng.randint(1, 900)
            item = posted(f"c{client_number}-{n}", debit, credit, amount, code=pb.TRANSFER_CODE_ADJUSTMENT)
            [result] = stub.CreateTransfers(pb.CreateTransfersRequest(transfers=[item]), timeout=60).results
            results.append((debit, credit, amount, result.status, result.failure_reason))
            if n % 50 == 0:
                balances = stub.GetBalances(pb.GetBalancesRequest(account_ids=wallets), timeout=60).balances
                observed_negative.extend(b for b in balances if b.available < 0)


def _run_workload(addresses):
    with tls_channel(addresses[0]) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        wallets = _open_accounts(stub, f"{random.getrandbits(32):08x}")
        results, negative = [], []
        threads = [
            threading.Thread(target=_client, args=(addresses[n % len(addresses)], wallets, n, results, negative))
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == CLIENTS * TRANSFERS_PER_CLIENT
        assert not negative
        expected = defaultdict(lambda: SEED_PER_WALLET)
        for debit, credit, amount, status, reason in results:
            if status == CREATED:
                expected[debit] -= amount
                expected[credit] += amount
            else:
                assert reason == pb.FAILURE_REASON_INSUFFICIENT_FUNDS
        balances = stub.GetBalances(pb.GetBalancesRequest(account_ids=wallets)).balances
        assert {b.account_id: b.posted for b in balances} == {w: expected[w] for w in wallets}
        assert sum(b.posted for b in balances) == WALLETS * SEED_PER_WALLET
        assert all(b.available >= 0 for b in balances)
        assert stub.GetTrialBalance(pb.GetTrialBalanceRequest()).balanced
        created = sum(status == CREATED for *_, status, _ in results)
        refused = len(results) - created
        assert created > 0 and refused > 0  # the workload really pushed against the bound


@pytest.fixture
def postgres_url(tmp_path):
    url, cleanup = new_database_url("postgres", tmp_path, "bank")
    yield url
    cleanup()


def test_sixteen_concurrent_clients_never_overdraw_and_conserve_the_total(postgres_url):
    server = start_ledger_thread(postgres_url)
    try:
        _run_workload([server.address])
    finally:
        server.stop()


def test_two_ledger_processes_on_one_database_never_overdraw(postgres_url):
    first = start_ledger_process(postgres_url)
    second = start_ledger_process(postgres_url)
    try:
        _run_workload([first.address, second.address])
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
