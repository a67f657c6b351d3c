"""WatchTransfers over real gRPC: every committed transfer, in commit order, resumable from a
cursor with no gap and no duplicate, including transfers committed while the stream is open.
"""

from __future__ import annotations

import threading

import grpc
import pytest

from coalition.ledger.v1 import ledger_pb2 as pb
from tests.ledger.helpers import CREATED, pending, post, posted, setup_pts, transfer, unique, void

STREAM_DEADLINE_SECONDS = 30


class Watcher:
    """Reads a WatchTransfers stream from a cursor; the deadline guarantees the test ends."""

    def __init__(self, ledger, after_commit_sequence: int = 0) -> None:
        self.call = ledger.WatchTransfers(
            pb.WatchTransfersRequest(after_commit_sequence=after_commit_sequence), timeout=STREAM_DEADLINE_SECONDS
        )
        self.transfers: list[pb.Transfer] = []

    def read_until(self, count: int) -> list[pb.Transfer]:
        """Read messages until at least `count` transfers arrived in total (never splits a message)."""
        while len(self.transfers) < count:
            message = next(self.call)
            assert message.transfers, "the stream sent an empty message"
            self.transfers.extend(message.transfers)
        return self.transfers

    def close(self) -> None:
        self.call.cancel()


@pytest.fixture
def watch(ledger):
    watchers: list[Watcher] = []

    def open_watcher(after_commit_sequence: int = 0) -> Watcher:
        watcher = Watcher(ledger, after_commit_sequence)
        watchers.append(watcher)
        return watcher

    yield open_watcher
    for watcher in watchers:
        watcher.close()


def commit_mixed_history(ledger, rounds: int) -> list[pb.Transfer]:
    """Earns, holds, captures and voids in batches of several items; returns them in commit order."""
    issuance, (wallet, shop) = setup_pts(ledger)
    committed: list[pb.Transfer] = []
    for _ in range(rounds):
        hold_a, hold_b = unique("hold"), unique("hold")
        batch = [
            posted(unique("earn"), issuance, wallet, 100),
            pending(hold_a, wallet, shop, 30),
            pending(hold_b, wallet, shop, 20),
        ]
        for items in (batch, [post(unique("capture"), hold_a, 10), void(unique("void"), hold_b)]):
            results = transfer(ledger, *items)
            assert all(r.status == CREATED for r in results), results
            committed.extend(r.transfer for r in results)
    return committed


def test_watch_from_zero_yields_every_committed_transfer_in_commit_order(ledger, watch):
    committed = commit_mixed_history(ledger, rounds=5)
    streamed = watch(0).read_until(len(committed))
    assert len(streamed) == len(committed) == 25
    assert [t.commit_sequence for t in streamed] == list(range(1, 26))
    assert [t.id for t in streamed] == [t.id for t in committed]
    assert [t.kind for t in streamed] == [t.kind for t in committed]
    commit_times = [(t.commit_time.seconds, t.commit_time.nanos) for t in streamed]
    assert commit_times == sorted(commit_times)


def test_watch_resumed_from_a_cursor_yields_exactly_the_rest(ledger, watch):
    committed = commit_mixed_history(ledger, rounds=4)
    first = watch(0).read_until(len(committed))
    cursor = first[7].commit_sequence  # in the middle of a batch of three
    rest = watch(cursor).read_until(len(committed) - 8)
    assert [t.commit_sequence for t in rest] == list(range(cursor + 1, len(committed) + 1))
    assert [t.id for t in rest] == [t.id for t in committed[8:]]
    assert list(rest) == list(first[8:])


def test_watch_delivers_transfers_committed_while_the_stream_is_open(ledger, watch):
    issuance, (wallet, _) = setup_pts(ledger)
    [early] = transfer(ledger, posted(unique("early"), issuance, wallet, 1))
    watcher = watch(0)
    assert [t.id for t in watcher.read_until(1)] == [early.transfer.id]
    later_ids = []
    for amount in range(2, 7):
        [result] = transfer(ledger, posted(unique("later"), issuance, wallet, amount))
        assert result.status == CREATED
        later_ids.append(result.transfer.id)
    streamed = watcher.read_until(6)
    assert [t.id for t in streamed] == [early.transfer.id, *later_ids]
    assert [t.commit_sequence for t in streamed] == [1, 2, 3, 4, 5, 6]


def test_watch_with_many_concurrent_writers_sees_contiguous_sequences(ledger, watch):
    issuance, wallets = setup_pts(ledger, wallets=8)
    watcher = watch(0)
    writer_count, per_writer = 8, 50
    created_ids: list[list[str]] = [[] for _ in range(writer_count)]
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for n in range(per_writer):
                [result] = transfer(ledger, posted(f"w{writer}-{n}", issuance, wallets[writer], 1 + n))
                assert result.status == CREATED, result
                created_ids[writer].append(result.transfer.id)
        except BaseException as error:  # surfaced by the main thread below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writer_count)]
    for thread in threads:
        thread.start()
    total = writer_count * per_writer
    streamed = watcher.read_until(total)
    for thread in threads:
        thread.join(timeout=STREAM_DEADLINE_SECONDS)
    assert not errors, errors[0]
    assert [t.commit_sequence for t in streamed] == list(range(1, total + 1))
    assert sorted(t.id for t in streamed) == sorted(i for ids in created_ids for i in ids)
    for writer in range(writer_count):  # each writer's calls were sequential, so they commit in order
        mine = [t.id for t in streamed if t.id.startswith(f"w{writer}-")]
        assert mine == created_ids[writer]


def test_watch_rejects_a_negative_cursor(ledger):
    call = ledger.WatchTransfers(pb.WatchTransfersRequest(after_commit_sequence=-1), timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
