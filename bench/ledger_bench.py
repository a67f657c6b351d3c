"""`make bench`: ledger throughput and latency against a baseline measured in the same run.

Starts servers as separate processes on the local PostgreSQL (a fresh schema), drives them
from one asyncio client process, and prints throughput, p50/p99 latency and the ratio to the
baseline: an empty unary handler on the same server stack at the same client concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid

import grpc
from sqlalchemy import create_engine

from bench.empty_server import METHOD_SERVICE
from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from tests.support.databases import PostgresSchema, postgres_unavailable_reason
from tests.support.servers import free_port, wait_until_serving

CONCURRENCY = 64
WALLETS = 10_000
HOT_ACCOUNTS = 3
BATCH_SIZE = 8_000
FUNDING = 10**12


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "COALITION_LOG_FORMAT": "json", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _summary(name: str, latencies: list[float], elapsed: float, items_per_call: int = 1) -> dict:
    latencies.sort()
    calls = len(latencies)
    return {
        "workload": name,
        "calls": calls,
        "items_per_second": round(calls * items_per_call / elapsed, 1),
        "calls_per_second": round(calls / elapsed, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[min(calls - 1, int(calls * 0.99))] * 1000, 2),
    }


async def _drive(name: str, make_call, seconds: float, concurrency: int, items_per_call: int = 1) -> dict:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        sequence = 0
        while time.perf_counter() < stop_at:
            sequence += 1
            started = time.perf_counter()
            await make_call(number, sequence)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return _summary(name, latencies, time.perf_counter() - started, items_per_call)


async def _baseline(address: str, seconds: float) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        ping = channel.unary_unary(f"/{METHOD_SERVICE}/Ping")
        await ping(b"", timeout=30, wait_for_ready=True)

        async def call(_worker: int, _sequence: int) -> None:
            await ping(b"", timeout=10)

        await _drive("warm-up", call, min(1.0, seconds), CONCURRENCY)
        return await _drive("baseline: empty handler", call, seconds, CONCURRENCY)


async def _prepare(stub, run: str) -> tuple[list[str], list[str]]:
    await stub.RegisterCurrency(pb.RegisterCurrencyRequest(currency=pb.Currency(code="PTS", owner_id="operator")))
    hot = [f"issuance:{run}:{n}" for n in range(HOT_ACCOUNTS)]
    wallets = [f"wallet:{run}:{n}" for n in range(WALLETS)]
    accounts = [pb.Account(id=h, currency_code="PTS", normal_side=pb.ACCOUNT_SIDE_DEBIT) for h in hot] + [
        pb.Account(id=w, currency_code="PTS", normal_side=pb.ACCOUNT_SIDE_CREDIT, no_overdraft=True) for w in wallets
    ]
    for start in range(0, len(accounts), 5_000):
        await stub.CreateAccounts(pb.CreateAccountsRequest(accounts=accounts[start : start + 5_000]), timeout=120)
    funding = [_transfer(f"fund:{run}:{w}", hot[0], w, FUNDING) for w in wallets]
    for start in range(0, len(funding), 5_000):
        await stub.CreateTransfers(pb.CreateTransfersRequest(transfers=funding[start : start + 5_000]), timeout=120)
    return hot, wallets


def _transfer(transfer_id: str, debit: str, credit: str, amount: int) -> pb.TransferInput:
    return pb.TransferInput(
        id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        currency_code="PTS",
        kind=pb.TRANSFER_KIND_POSTED,
        code=pb.TRANSFER_CODE_EARN,
    )


def _analyze(database_url: str) -> None:
    """A production database has planner statistics; a schema made seconds ago has none yet."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


async def _ledger_workloads(address: str, database_url: str, seconds: float, batches: int) -> list[dict]:
    run = uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        hot, wallets = await _prepare(stub, run)
        _analyze(database_url)
        rng = random.Random(7)

        def single(prefix: str, debit_of):
            async def call(worker: int, sequence: int) -> None:
                credit = rng.choice(wallets)
                debit = debit_of()
                while debit == credit:
                    debit = debit_of()
                item = _transfer(f"{prefix}:{run}:{worker}:{sequence}", debit, credit, 1)
                response = await stub.CreateTransfers(pb.CreateTransfersRequest(transfers=[item]), timeout=30)
                if response.results[0].status != pb.ITEM_STATUS_CREATED:
                    raise RuntimeError(f"transfer failed: {response.results[0]}")

            return call

        results = []
        await _drive("warm-up", single("warm", lambda: rng.choice(wallets)), min(1.0, seconds), CONCURRENCY)
        results.append(
            await _drive(
                "single transfers, random member accounts",
                single("random", lambda: rng.choice(wallets)),
                seconds,
                CONCURRENCY,
            )
        )
        results.append(
            await _drive(
                f"single transfers, debits on {HOT_ACCOUNTS} hot accounts",
                single("hot", lambda: rng.choice(hot)),
                seconds,
                CONCURRENCY,
            )
        )
        latencies = []
        started = time.perf_counter()
        for number in range(batches):
            items = [
                _transfer(f"batch:{run}:{number}:{n}", rng.choice(wallets), rng.choice(hot), 1)
                for n in range(BATCH_SIZE)
            ]
            request = pb.CreateTransfersRequest(transfers=items)
            call_started = time.perf_counter()
            response = await stub.CreateTransfers(request, timeout=120)
            latencies.append(time.perf_counter() - call_started)
            if any(r.status != pb.ITEM_STATUS_CREATED for r in response.results):
                raise RuntimeError("batch item failed")
        # Building requests is client work; count only the time spent in calls.
        results.append(_summary(f"batches of {BATCH_SIZE:,} transfers", latencies, sum(latencies), BATCH_SIZE))
        del started
        return results


def _print(results: list[dict], baseline: dict) -> None:
    base = baseline["calls_per_second"]
    print(f"\n{'workload':52} {'items/s':>10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x baseline':>10}")
    for result in [baseline, *results]:
        ratio = result["calls_per_second"] / base
        print(
            f"{result['workload']:52} {result['items_per_second']:>10,.0f} {result['calls_per_second']:>9,.0f} "
            f"{result['latency_ms_p50']:>8.2f} {result['latency_ms_p99']:>8.2f} {ratio:>10.2f}"
        )


def _targets(results: list[dict], baseline: dict) -> list[str]:
    single, hot, batch = results
    base = baseline["calls_per_second"]
    checks = [
        ("single transfers >= 0.5 x baseline", single["calls_per_second"] / base, 0.5, ">="),
        ("hot accounts within 15% of single", hot["calls_per_second"] / single["calls_per_second"], 0.85, ">="),
        ("batches >= 15,000 transfers/s", batch["items_per_second"], 15_000, ">="),
        ("single transfers p99 <= 30 ms", single["latency_ms_p99"], 30.0, "<="),
    ]
    lines = []
    for label, value, target, op in checks:
        met = value >= target if op == ">=" else value <= target
        lines.append(f"{'MET ' if met else 'MISS'} {label}: {value:,.2f} (target {op} {target:,})")
    return lines


async def _main(arguments) -> None:
    reason = postgres_unavailable_reason()
    if reason:
        raise SystemExit(f"make bench needs PostgreSQL: {reason}")
    seconds = arguments.seconds
    schema = PostgresSchema("bench")
    processes = []
    try:
        empty_address = f"127.0.0.1:{free_port()}"
        bare_address = f"127.0.0.1:{free_port()}"
        ledger_address = f"127.0.0.1:{free_port()}"
        processes.append(_start(["-m", "bench.empty_server", "--address", empty_address], {}))
        processes.append(_start(["-m", "bench.empty_server", "--bare", "--address", bare_address], {}))
        processes.append(
            _start(
                ["-m", "services.ledger.server"],
                {"COALITION_LEDGER_DATABASE_URL": schema.url, "COALITION_LEDGER_LISTEN_ADDRESS": ledger_address},
            )
        )
        wait_until_serving(empty_address)
        wait_until_serving(ledger_address)
        bare = await _baseline(bare_address, seconds)
        bare["workload"] = "raw grpc.aio empty handler (no interceptor)"
        baseline = await _baseline(empty_address, seconds)
        results = await _ledger_workloads(ledger_address, schema.url, seconds, arguments.batches)
    finally:
        for process in processes:
            _stop(process)
        schema.drop()
    print(f"\nclient concurrency {CONCURRENCY}, {seconds:.0f} s per workload, PostgreSQL, {os.cpu_count()} cores")
    _print([bare, *results], baseline)
    print()
    for line in _targets(results, baseline):
        print(line)
    if arguments.json:
        with open(arguments.json, "w") as out:
            json.dump({"baseline": baseline, "bare": bare, "results": results}, out, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 s per workload, 3 batches")
    parser.add_argument("--json", default="")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.seconds, parsed.batches = 2.0, 3
    asyncio.run(_main(parsed))
