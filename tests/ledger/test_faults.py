"""Fault injection: the ledger process is killed (SIGKILL) in the middle of a write load.

After a restart on the same database every batch is either wholly there or wholly absent,
replaying every batch with the same ids completes the set exactly once, every currency still
balances, and the commit-order stream has no gap. `make soak` runs it longer.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from tests.ledger.helpers import CREATED, CREDIT, DEBIT, EXISTS, account, create_accounts, posted, register_currency
from tests.support.servers import start_ledger_process
from tests.support.tls import channel as tls_channel

SCALE = int(os.environ.get("COALITION_SOAK_SCALE", "1"))
BATCHES = 60 * SCALE
BATCH_SIZE = 200
WALLETS = 20


def _batch(number: int, issuance: str, wallets: list[str]) -> list[pb.TransferInput]:
    return [
        posted(f"b{number}-{n}", issuance, wallets[(number + n) % WALLETS], 1 + n % 7, linked=n % 2 == 0)
        for n in range(BATCH_SIZE)
    ]


def _load(address: str, batches, stop: threading.Event) -> None:
    with tls_channel(address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        for items in batches:
            if stop.is_set():
                return
            try:
                stub.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=10)
            except grpc.RpcError:
                return  # the server died under us: exactly the point


def test_killed_ledger_leaves_whole_batches_and_replay_completes_exactly_once(ledger_database_url):
    server = start_ledger_process(ledger_database_url)
    with tls_channel(server.address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        register_currency(stub)
        issuance = "issuance:fault"
        wallets = [f"wallet:fault:{n}" for n in range(WALLETS)]
        create_accounts(stub, account(issuance, DEBIT), *(account(w, CREDIT, no_overdraft=True) for w in wallets))
    batches = [_batch(number, issuance, wallets) for number in range(BATCHES)]
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(server.address, batches, stop))
    loader.start()
    with tls_channel(server.address) as channel:
        watcher = ledger_pb2_grpc.LedgerServiceStub(channel)
        deadline = time.monotonic() + 60
        while watcher.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=10).commit_sequence < 5 * BATCH_SIZE:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.01)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)
    stop.set()
    loader.join(timeout=30)

    restarted = start_ledger_process(ledger_database_url)
    try:
        with tls_channel(restarted.address) as channel:
            stub = ledger_pb2_grpc.LedgerServiceStub(channel)
            expected_total = 0
            committed_batches = 0
            for items in batches:
                found = stub.GetTransfers(pb.GetTransfersRequest(ids=[i.id for i in items]), timeout=30)
                assert len(found.transfers) in (0, len(items)), "a batch was partly committed"
                committed_batches += bool(found.transfers)
                results = stub.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=60).results
                expected_status = EXISTS if found.transfers else CREATED
                assert {r.status for r in results} == {expected_status}
                expected_total += sum(i.amount for i in items)
            assert 5 <= committed_batches < BATCHES, "the kill must land in the middle of the load"
            balances = stub.GetBalances(pb.GetBalancesRequest(account_ids=wallets), timeout=30).balances
            assert sum(b.posted for b in balances) == expected_total
            trial = stub.GetTrialBalance(pb.GetTrialBalanceRequest(), timeout=30)
            assert trial.balanced
            sequences = []
            stream = stub.WatchTransfers(pb.WatchTransfersRequest(after_commit_sequence=0), timeout=60)
            for message in stream:
                sequences.extend(t.commit_sequence for t in message.transfers)
                if len(sequences) >= trial.commit_sequence:
                    stream.cancel()
                    break
            assert sequences == list(range(1, trial.commit_sequence + 1))
    finally:
        assert restarted.stop() == 0
