"""The two merges partners' write path stands on, each against a real database or a real ledger.

Group commit (services/common/group_commit.py): concurrent units of work share one transaction;
one unit's refusal or unique-key conflict changes nothing of its neighbours, and a conflicting
unit is run again alone with its own retry policy.

Merged CreateTransfers (services/common/ledger_client.py, merge_transfers=True): concurrent calls
share one ledger call; each gets its own results; one call the ledger refuses as a whole
(INVALID_ARGUMENT) fails only itself; a call ending in an open linked chain is sent alone.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.db import Database, DatabaseOptions
from services.common.errors import ServiceError
from services.common.group_commit import GroupCommit
from services.common.ledger_client import LedgerClient, LedgerRefused
from tests.ledger.helpers import CREATED, DEBIT, account, create_accounts, posted, register_currency
from tests.support.databases import new_database_url
from tests.support.servers import start_ledger_thread
from tests.support.tls import channel as tls_channel
from tests.support.tls import transport as tls_transport

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("text", String(40), unique=True))


class Refused(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    url, cleanup = new_database_url(request.param, tmp_path, "group")
    database = Database(DatabaseOptions(url=url))
    metadata.create_all(database.writer)
    yield database
    database.dispose()
    cleanup()


def test_grouped_writes_commit_together_and_fail_alone(database):
    group = GroupCommit(database)

    def add(number: int, text: str, refuse: bool = False):
        def work(connection):
            connection.execute(insert(notes).values(id=number, text=text))
            if refuse:
                raise Refused("REFUSED", "refused after writing")
            return number

        return work

    async def main():
        database.write(lambda connection: connection.execute(insert(notes).values(id=1000, text="taken")))
        calls = [group.write(add(n, f"note {n}")) for n in range(1, 41)]
        calls.append(group.write(add(41, "refused", refuse=True)))
        calls.append(group.write(add(42, "taken")))  # unique conflict: run alone, then refused for real
        calls.append(group.write(add(43, "conflict then fine"), retry_unique_violation=True))
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(main())
    assert answers[:40] == list(range(1, 41))
    assert isinstance(answers[40], Refused)
    assert "IntegrityError" in type(answers[41]).__name__
    assert answers[42] == 43
    stored = database.read(lambda connection: set(connection.execute(select(notes.c.id)).scalars()))
    assert stored == set(range(1, 41)) | {43, 1000}  # neither the refused nor the conflicting row


def test_a_group_without_refusals_commits_every_unit_once(database):
    """The common case runs straight (no savepoints); a unit's work runs once and is committed."""
    group = GroupCommit(database)
    runs: list[int] = []

    def add(number: int):
        def work(connection):
            runs.append(number)
            connection.execute(insert(notes).values(id=number, text=f"straight {number}"))
            return number

        return work

    async def main():
        return await asyncio.gather(*(group.write(add(n)) for n in range(1, 31)))

    assert asyncio.run(main()) == list(range(1, 31))
    assert sorted(runs) == list(range(1, 31))  # no unit ran twice
    stored = database.read(lambda connection: set(connection.execute(select(notes.c.id)).scalars()))
    assert stored == set(range(1, 31))


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_address(request, tmp_path):
    url, cleanup = new_database_url(request.param, tmp_path, "ledger")
    server = start_ledger_thread(url)
    with tls_channel(server.address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        register_currency(stub)
        create_accounts(stub, account("iss", DEBIT), *(account(f"w{n}") for n in range(8)))
    yield server.address
    server.stop()
    cleanup()


def test_merged_ledger_calls_answer_each_caller_and_a_refused_call_fails_alone(ledger_address):
    async def main():
        client = LedgerClient(ledger_address, tls_transport(), merge_transfers=True)
        sent: list[list[str]] = []
        send = client._create_transfers

        async def counting(transfers):
            sent.append([transfer.id for transfer in transfers])
            return await send(transfers)

        client._create_transfers = counting
        calls = [
            client.create_transfers([posted(f"t{n}-a", "iss", f"w{n % 8}", 1), posted(f"t{n}-b", "iss", "w0", 2)])
            for n in range(30)
        ]
        calls.append(client.create_transfers([posted("bad", "iss", "w1", 0)]))  # amount 0: INVALID_ARGUMENT
        chain = [posted("c1", "iss", "w2", 1, linked=True), posted("c2", "iss", "w3", 1, linked=True)]
        calls.append(client.create_transfers(chain))  # an open chain: sent alone, refused alone
        answers = await asyncio.gather(*calls, return_exceptions=True)
        await client.close()
        return answers, sent

    answers, sent = asyncio.run(main())
    for n, answer in enumerate(answers[:30]):
        assert [r.status for r in answer] == [CREATED, CREATED], n
        assert [r.transfer.id for r in answer] == [f"t{n}-a", f"t{n}-b"]
    assert isinstance(answers[30], LedgerRefused) and answers[30].invalid_argument
    assert max(len(ids) for ids in sent) > 2, f"no ledger call carried more than one caller's transfers: {sent}"
    assert ["c1", "c2"] in sent and not any("c1" in ids and len(ids) > 2 for ids in sent)
    assert [r.failure_reason for r in answers[31]] == [pb.FAILURE_REASON_LINKED_CHAIN_OPEN] * 2  # its own answer


def test_transfers_sent_apart_fail_only_the_one_the_ledger_refuses(ledger_address):
    """create_transfers_apart: one call; when the ledger refuses its content as a whole, each
    transfer alone, so the good ones are created and only the bad one carries the refusal."""

    async def main():
        client = LedgerClient(ledger_address, tls_transport())
        try:
            return await client.create_transfers_apart(
                [
                    posted("apart-1", "iss", "w1", 1),
                    posted("apart-bad", "iss", "w1", 0),
                    posted("apart-2", "iss", "w2", 1),
                ]
            )
        finally:
            await client.close()

    first, bad, second = asyncio.run(main())
    assert first.status == CREATED and second.status == CREATED
    assert isinstance(bad, LedgerRefused) and bad.invalid_argument


def test_merged_balance_reads_answer_each_caller_and_an_unknown_account_fails_alone(ledger_address):
    """Concurrent GetBalances reads share one ledger call; each caller gets its own accounts, in
    its order; a read naming an account the ledger does not know fails only itself."""

    async def main():
        client = LedgerClient(ledger_address, tls_transport(), merge_transfers=True)
        await client.create_transfers([posted("balance-seed", "iss", "w5", 7)])
        sent: list[list[str]] = []
        read = client._get_balances

        async def counting(account_ids, as_of_us=None):
            sent.append(list(account_ids))
            return await read(account_ids, as_of_us)

        client._get_balances = counting
        calls = [client.get_balances([f"w{n % 8}", "w5"]) for n in range(20)]
        calls.append(client.get_balances(["nobody"]))
        answers = await asyncio.gather(*calls, return_exceptions=True)
        await client.close()
        return answers, sent

    answers, sent = asyncio.run(main())
    for n, answer in enumerate(answers[:20]):
        assert [(balance.account_id, balance.posted) for balance in answer] == [
            (f"w{n % 8}", 7 if n % 8 == 5 else 0),
            ("w5", 7),
        ], n
    assert isinstance(answers[20], LedgerRefused) and answers[20].ledger_code == "NOT_FOUND"
    assert max(len(ids) for ids in sent) > 2, f"no ledger read carried more than one caller's accounts: {sent}"
