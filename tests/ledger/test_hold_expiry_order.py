"""Once any read reports a hold EXPIRED, or frees its amount, no post or void of it ever commits.

Many holds expire at one moment; posts and voids are sent from -30 ms to +30 ms around it while
readers poll GetTransfers and GetBalances. On PostgreSQL two ledger processes share the database
and the clients spread over both (issue 7, point 1).
"""

from __future__ import annotations

import os
import random
import threading
import time

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from tests.ledger.helpers import CREATED, CREDIT, DEBIT, account, create_accounts, pending, posted, register_currency
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_process, start_ledger_thread
from tests.support.tls import channel as tls_channel

SCALE = int(os.environ.get("COALITION_SOAK_SCALE", "1"))
HOLDS = 80 * SCALE
READERS = 8
LOADERS = 4
LOAD_BATCH = 20
ROUNDS = 2
HOLD_TIMEOUT_SECONDS = 2
SPREAD_SECONDS = 0.030


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_addresses(request, tmp_path):
    url, cleanup = new_database_url(request.param, tmp_path, "expiry")
    if request.param == "sqlite":
        servers = [start_ledger_thread(url)]
    else:
        servers = [start_ledger_process(url), start_ledger_process(url)]
    yield [server.address for server in servers]
    for server in servers:
        server.stop()
    cleanup()


def _round(stubs, run: str) -> list[str]:
    """One round; returns the holds that were read as expired or freed and still got posted or voided."""
    stub = stubs[0]
    issuance, redemption = f"iss-{run}", f"red-{run}"
    wallets = [f"w{n}-{run}" for n in range(HOLDS)]
    load_wallet = f"load-{run}"
    create_accounts(
        stub,
        account(issuance, DEBIT),
        account(redemption),
        account(load_wallet),
        *(account(w, CREDIT, no_overdraft=True) for w in wallets),
    )
    seed = [posted(f"seed-{w}", issuance, w, 100) for w in wallets]
    assert all(r.status == CREATED for r in stub.CreateTransfers(pb.CreateTransfersRequest(transfers=seed)).results)
    holds = [pending(f"hold-{w}", w, redemption, 60, timeout_seconds=HOLD_TIMEOUT_SECONDS) for w in wallets]
    results = stub.CreateTransfers(pb.CreateTransfersRequest(transfers=holds)).results
    assert all(r.status == CREATED for r in results)
    expire_at = max(r.transfer.expire_time.ToMicroseconds() for r in results) / 1e6
    hold_ids = [hold.id for hold in holds]
    seen_expired: set[str] = set()
    seen_freed: set[str] = set()
    stop = threading.Event()

    def read(reader: int) -> None:
        reader_stub = stubs[reader % len(stubs)]
        while not stop.is_set():
            try:
                for transfer in reader_stub.GetTransfers(pb.GetTransfersRequest(ids=hold_ids), timeout=10).transfers:
                    if transfer.hold_state == pb.HOLD_STATE_EXPIRED:
                        seen_expired.add(transfer.id)
                balances = reader_stub.GetBalances(pb.GetBalancesRequest(account_ids=wallets), timeout=10).balances
                for hold_id, balance in zip(hold_ids, balances, strict=True):
                    if balance.debits_pending == 0 and balance.debits_posted == 0:
                        seen_freed.add(hold_id)  # neither held nor spent: the read freed the hold
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error

    def resolve(index: int, hold_id: str) -> None:
        rng = random.Random(index)
        # Denser near the expiry, where a writer's decision and a reader's can straddle it.
        send_at = expire_at + rng.triangular(-SPREAD_SECONDS, SPREAD_SECONDS, 0.0)
        time.sleep(max(0.0, send_at - time.time()))
        item = (
            pb.TransferInput(id=f"post-{hold_id}", kind=pb.TRANSFER_KIND_POST_PENDING, pending_id=hold_id, amount=60)
            if index % 2
            else pb.TransferInput(id=f"void-{hold_id}", kind=pb.TRANSFER_KIND_VOID_PENDING, pending_id=hold_id)
        )
        stubs[index % len(stubs)].CreateTransfers(pb.CreateTransfersRequest(transfers=[item]), timeout=10)

    def load(loader: int) -> None:
        # Unrelated traffic makes the batches that carry the posts and voids bigger and slower to
        # commit, widening the gap between a writer's decision and its commit, as under real load.
        loader_stub, count = stubs[loader % len(stubs)], 0
        while not stop.is_set():
            items = [posted(f"load-{run}-{loader}-{count}-{n}", issuance, load_wallet, 1) for n in range(LOAD_BATCH)]
            loader_stub.CreateTransfers(pb.CreateTransfersRequest(transfers=items), timeout=10)
            count += 1

    readers = [threading.Thread(target=read, args=(n,)) for n in range(READERS)]
    loaders = [threading.Thread(target=load, args=(n,)) for n in range(LOADERS)]
    writers = [threading.Thread(target=resolve, args=(n, h)) for n, h in enumerate(hold_ids)]
    for thread in readers + loaders + writers:
        thread.start()
    for thread in writers:
        thread.join()
    time.sleep(0.2)
    stop.set()
    for thread in readers + loaders:
        thread.join()
    final = {t.id: t.hold_state for t in stub.GetTransfers(pb.GetTransfersRequest(ids=hold_ids)).transfers}
    resolved = {pb.HOLD_STATE_POSTED, pb.HOLD_STATE_VOIDED}
    flips = [h for h in seen_expired if final[h] in resolved]
    flips += [h for h in seen_freed if final[h] == pb.HOLD_STATE_POSTED]
    return flips


def test_a_hold_read_as_expired_is_never_posted_or_voided_afterwards(ledger_addresses):
    channels = [tls_channel(address) for address in ledger_addresses]
    stubs = [ledger_pb2_grpc.LedgerServiceStub(channel) for channel in channels]
    try:
        register_currency(stubs[0])
        flips = []
        for round_number in range(ROUNDS):
            flips += _round(stubs, f"r{round_number}-{random.randrange(10**9)}")
        assert flips == [], f"{len(flips)} holds were read as expired or freed, then posted or voided: {flips[:5]}"
    finally:
        for channel in channels:
            channel.close()


def test_a_post_decided_before_expiry_but_paused_past_it_cannot_follow_an_expired_read(tmp_path):
    """The same promise made deterministic with a database pause (PostgreSQL).

    Another session holds the ledger's clock row while a post of a hold is in flight, so the post's
    transaction stalls in the middle: on the old code after it had compared the clock with the hold's
    expiry (not yet expired) and before its commit. A read made during the pause, after the expiry,
    answered EXPIRED at once, and the post then committed CREATED. Now the read waits for the pause
    too, and whichever of the two goes first, they agree.
    """
    from sqlalchemy import create_engine, text

    url, cleanup = new_database_url("postgres", tmp_path, "pause")
    server = start_ledger_process(url)
    channel = tls_channel(server.address)
    stub = ledger_pb2_grpc.LedgerServiceStub(channel)
    pauser = create_engine(url)
    try:
        register_currency(stub)
        create_accounts(stub, account("iss", DEBIT), account("red"), account("w", CREDIT, no_overdraft=True))
        assert (
            stub.CreateTransfers(pb.CreateTransfersRequest(transfers=[posted("seed", "iss", "w", 100)]))
            .results[0]
            .status
            == CREATED
        )
        hold = stub.CreateTransfers(
            pb.CreateTransfersRequest(transfers=[pending("hold", "w", "red", 60, timeout_seconds=1)])
        ).results[0]
        expire_at = hold.transfer.expire_time.ToMicroseconds() / 1e6
        answers: dict[str, object] = {}

        def post() -> None:
            item = pb.TransferInput(id="post", kind=pb.TRANSFER_KIND_POST_PENDING, pending_id="hold", amount=60)
            answers["post"] = stub.CreateTransfers(pb.CreateTransfersRequest(transfers=[item]), timeout=20).results[0]

        def read() -> None:
            answers["read"] = stub.GetTransfers(pb.GetTransfersRequest(ids=["hold"]), timeout=20).transfers[0]

        with pauser.connect() as pause:
            pause.execute(text("SELECT 1 FROM ledger_clock WHERE id = 1 FOR UPDATE"))
            time.sleep(max(0.0, expire_at - 0.4 - time.time()))
            poster = threading.Thread(target=post)
            poster.start()  # 0.4 s before the expiry: on its own it would be in time
            time.sleep(max(0.0, expire_at + 0.3 - time.time()))
            reader = threading.Thread(target=read)
            reader.start()  # after the expiry, while the post is stalled
            time.sleep(0.5)
            pause.rollback()  # the pause ends
        poster.join(30)
        reader.join(30)
        read_state, post_status = answers["read"].hold_state, answers["post"].status
        final = stub.GetTransfers(pb.GetTransfersRequest(ids=["hold"])).transfers[0].hold_state
        if read_state == pb.HOLD_STATE_EXPIRED:
            assert post_status != CREATED and final == pb.HOLD_STATE_EXPIRED, (post_status, final)
        else:
            assert read_state == pb.HOLD_STATE_POSTED and post_status == CREATED, (read_state, post_status)
    finally:
        pauser.dispose()
        channel.close()
        server.stop()
        cleanup()
