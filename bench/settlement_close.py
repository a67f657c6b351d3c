"""Closing a settlement period of 1,000,000 ledger transfers, timed.

    .venv/bin/python -m bench.settlement_close              # 1,000,000 transfers
    .venv/bin/python -m bench.settlement_close --transfers 100000

Starts a ledger as a separate process on the local PostgreSQL (a fresh schema), loads a
period through CreateTransfers (earns, earn reversals, redemptions, expiries at 40 partners and
20,000 members, with a price change in the middle), then closes the period through the
settlement use case, which reads the ledger only via gRPC: the ledger's database aggregates
(GetActivitySummary per agreement sub-window), settlement prices a few hundred lines.
Loading is not timed; closing is, and must stay under 60 s.

Output of the full run on this machine (2 CPUs, PostgreSQL on loopback, 2026-11-24):

    loaded 1,000,000 transfers in 84.7 s
    closed period of 1,000,000 transfers in 1.40 s (40 statements, 160 lines,
      operator net 690,187.60 EUR, netting balanced True, closed_now True)
    target: close under 60 s: met
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

from bench import tls
from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.db import Database, DatabaseOptions, migrate
from services.common.tls import Transport
from services.settlement import model, periods, store
from services.settlement.context import SettlementContext
from services.settlement.ledger_client import LedgerClient
from services.settlement.server import MIGRATIONS, VERSION_TABLE
from tests.support.databases import PostgresSchema, postgres_unavailable_reason
from tests.support.servers import free_port, wait_until_serving

PARTNERS = 40
MEMBERS = 20_000
BATCH_SIZE = 8_000
CONCURRENT_BATCHES = 4
CLOSE_SECONDS_MAX = 60.0


def now_us() -> int:
    return time.time_ns() // 1000


async def _setup(stub) -> None:
    for code, scale in (("PTS", 0), ("EUR", 2)):
        await stub.RegisterCurrency(
            pb.RegisterCurrencyRequest(currency=pb.Currency(code=code, scale=scale, owner_id="operator")), timeout=30
        )
    accounts = [
        pb.Account(
            id="breakage:PTS",
            currency_code="PTS",
            normal_side=pb.ACCOUNT_SIDE_CREDIT,
            owner_id="operator",
            kind="operator_breakage",
        )
    ]
    for p in range(PARTNERS):
        accounts.append(
            pb.Account(
                id=f"issuance:PTS:p{p}",
                currency_code="PTS",
                normal_side=pb.ACCOUNT_SIDE_DEBIT,
                owner_id=f"p{p}",
                kind="partner_issuance",
            )
        )
        accounts.append(
            pb.Account(
                id=f"redemption:PTS:p{p}",
                currency_code="PTS",
                normal_side=pb.ACCOUNT_SIDE_CREDIT,
                owner_id=f"p{p}",
                kind="partner_redemption",
            )
        )
    accounts += [
        pb.Account(
            id=f"wallet:PTS:m{m}",
            currency_code="PTS",
            normal_side=pb.ACCOUNT_SIDE_CREDIT,
            owner_id=f"m{m}",
            kind="member_wallet",
            no_overdraft=True,
        )
        for m in range(MEMBERS)
    ]
    for index in range(0, len(accounts), BATCH_SIZE):
        await stub.CreateAccounts(pb.CreateAccountsRequest(accounts=accounts[index : index + BATCH_SIZE]), timeout=60)


def _transfers(count: int, phase: str):
    """Earns (70%), then reversals, redemptions and expiries of part of what was earned."""
    earns = count * 7 // 10
    for i in range(earns):
        yield pb.TransferInput(
            id=f"{phase}-e{i}",
            debit_account_id=f"issuance:PTS:p{i % PARTNERS}",
            credit_account_id=f"wallet:PTS:m{i % MEMBERS}",
            amount=100,
            currency_code="PTS",
            kind=pb.TRANSFER_KIND_POSTED,
            code=pb.TRANSFER_CODE_EARN,
        )
    rest = count - earns
    for i in range(rest):
        member, partner = f"wallet:PTS:m{i % MEMBERS}", i % PARTNERS
        if i % 6 == 0:
            yield pb.TransferInput(
                id=f"{phase}-v{i}",
                debit_account_id=member,
                credit_account_id=f"issuance:PTS:p{partner}",
                amount=5,
                currency_code="PTS",
                kind=pb.TRANSFER_KIND_POSTED,
                code=pb.TRANSFER_CODE_REVERSAL,
            )
        elif i % 6 == 1:
            yield pb.TransferInput(
                id=f"{phase}-x{i}",
                debit_account_id=member,
                credit_account_id="breakage:PTS",
                amount=3,
                currency_code="PTS",
                kind=pb.TRANSFER_KIND_POSTED,
                code=pb.TRANSFER_CODE_EXPIRY,
            )
        else:
            yield pb.TransferInput(
                id=f"{phase}-r{i}",
                debit_account_id=member,
                credit_account_id=f"redemption:PTS:p{partner}",
                amount=10,
                currency_code="PTS",
                kind=pb.TRANSFER_KIND_POSTED,
                code=pb.TRANSFER_CODE_REDEEM,
            )


async def _load(stub, count: int, phase: str) -> None:
    pending: list = []
    semaphore = asyncio.Semaphore(CONCURRENT_BATCHES)

    async def send(batch):
        async with semaphore:
            response = await stub.CreateTransfers(pb.CreateTransfersRequest(transfers=batch), timeout=300)
            failed = [r for r in response.results if r.status == pb.ITEM_STATUS_FAILED]
            if failed:
                raise RuntimeError(f"ledger refused {len(failed)} transfers, e.g. {failed[0]}")

    batch = []
    earns_done = False
    for transfer in _transfers(count, phase):
        if not earns_done and transfer.code != pb.TRANSFER_CODE_EARN:
            # Spending must follow the earns it spends: finish them first.
            if batch:
                pending.append(asyncio.create_task(send(batch)))
                batch = []
            await asyncio.gather(*pending)
            pending, earns_done = [], True
        batch.append(transfer)
        if len(batch) == BATCH_SIZE:
            pending.append(asyncio.create_task(send(batch)))
            batch = []
    if batch:
        pending.append(asyncio.create_task(send(batch)))
    await asyncio.gather(*pending)


def _agreements(valid_from_us: int, price_change_us: int) -> list[model.PriceAgreement]:
    def version(partner, start, issue):
        price = model.PointPrice("PTS", model.parse_price(issue), model.parse_price("0.0080"))
        return model.PriceAgreement(f"{partner}-{start}", partner, start, (price,))

    return [version(f"p{p}", valid_from_us, "0.0100") for p in range(PARTNERS)] + [
        version(f"p{p}", price_change_us, "0.0105") for p in range(0, PARTNERS, 2)
    ]


async def _main(transfers: int) -> int:
    reason = postgres_unavailable_reason()
    if reason:
        print(f"bench needs PostgreSQL: {reason}")
        return 1
    ledger_schema, settlement_schema = PostgresSchema("bench_ledger"), PostgresSchema("bench_settlement")
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.ledger.server"],
        env={
            **os.environ,
            "COALITION_LEDGER_DATABASE_URL": ledger_schema.url,
            "COALITION_LEDGER_LISTEN_ADDRESS": address,
            "COALITION_LOG_LEVEL": "warning",
            "COALITION_DB_STATEMENT_TIMEOUT_MS": "120000",
        },
        stdout=subprocess.DEVNULL,
    )
    database = Database(DatabaseOptions(url=settlement_schema.url, pool_size=2))
    try:
        wait_until_serving(address)
        migrate(database, MIGRATIONS, VERSION_TABLE)
        async with tls.aio_channel(address) as channel:
            stub = ledger_pb2_grpc.LedgerServiceStub(channel)
            await _setup(stub)
            start_us = now_us()
            loading = time.perf_counter()
            await _load(stub, transfers // 2, "a")
            price_change_us = now_us()
            await _load(stub, transfers - transfers // 2, "b")
            end_us = now_us() + 1
            print(f"loaded {transfers:,} transfers in {time.perf_counter() - loading:.1f} s")
        while now_us() <= end_us:
            await asyncio.sleep(0.01)
        for agreement in _agreements(start_us - 1, price_change_us):
            database.write(lambda connection, a=agreement: store.insert_agreement(connection, a, now_us()))
        ledger = LedgerClient(address, Transport.development("settlement"))
        context = SettlementContext(database, ledger, ZoneInfo("Europe/Amsterdam"), close_delay_seconds=0)
        closing = time.perf_counter()
        settlement, closed_now = await periods.close_period(context, "bench", start_us, end_us)
        seconds = time.perf_counter() - closing
        await ledger.close()
        lines = sum(len(s.lines) for s in settlement.statements)
        print(
            f"closed period of {transfers:,} transfers in {seconds:.2f} s"
            f" ({len(settlement.statements)} statements, {lines} lines,"
            f" operator net {settlement.netting.operator_net_cents / 100:,.2f} EUR,"
            f" netting balanced {settlement.netting.balanced}, closed_now {closed_now})"
        )
        ok = seconds < CLOSE_SECONDS_MAX and settlement.netting.balanced
        print(f"target: close under {CLOSE_SECONDS_MAX:.0f} s: {'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    finally:
        database.dispose()
        process.terminate()
        process.wait(timeout=30)
        ledger_schema.drop()
        settlement_schema.drop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transfers", type=int, default=1_000_000)
    tls.use_development_pki()
    sys.exit(asyncio.run(_main(parser.parse_args().transfers)))


if __name__ == "__main__":
    main()
