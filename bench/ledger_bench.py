"""`make bench`: ledger throughput and latency against a baseline measured in the same run.

Starts servers as separate processes on the local PostgreSQL (a fresh schema), drives them
from one asyncio client process, and prints throughput, p50/p99 latency and the ratio to the
baseline: an empty unary handler on the same server stack at the same client concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import grpc
from sqlalchemy import create_engine

from bench import tls
from bench.empty_server import METHOD_SERVICE
from coalition.ledger.v1 import ledger_pb2 as pb
from coalition.ledger.v1 import ledger_pb2_grpc
from services.common.errors import error_info_of
from tests.support.databases import PostgresSchema, postgres_unavailable_reason
from tests.support.servers import free_port, wait_until_serving

CONCURRENCY = 64
WALLETS = 10_000
HOT_ACCOUNTS = 3
BATCH_SIZE = 8_000
FUNDING = 10**12
ERROR_MESSAGE_CHARACTERS_MAX = 200


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


class CallFailed(Exception):
    """A call that answered but did not do its job (say, a refused batch item): counted as `key`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class WorkloadExhausted(Exception):
    """A workload ran out of prepared objects (say, receipts to return) before its time was up."""


@dataclass
class Tally:
    """What a workload's calls came to: latencies of every finished call, failed ones too, and the
    failures counted by status code and ErrorInfo reason, each with its first message."""

    latencies: list[float] = field(default_factory=list)
    succeeded: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    error_examples: dict[str, str] = field(default_factory=dict)

    async def time(self, call, started: float) -> None:
        """Await `call()`; its latency runs from `started` (the intended send time in an open loop)."""
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            info = error_info_of(error)
            key = f"{error.code().name} {info.reason}" if info is not None and info.reason else error.code().name
            self._failed(key, error.details() or "")
        except CallFailed as failure:
            self._failed(failure.key, str(failure))
        else:
            self.succeeded += 1
        self.latencies.append(time.perf_counter() - started)

    def _failed(self, key: str, message: str) -> None:
        self.errors[key] += 1
        self.error_examples.setdefault(key, message[:ERROR_MESSAGE_CHARACTERS_MAX])

    def row(self, name: str, elapsed: float, items_per_call: int = 1, **extra) -> dict:
        """Calls/s counts the calls that succeeded; p50/p99 cover every finished call."""
        ordered = sorted(self.latencies)
        count = len(ordered)
        return {
            "workload": name,
            "calls": self.succeeded,
            "items_per_second": round(self.succeeded * items_per_call / elapsed, 1),
            "calls_per_second": round(self.succeeded / elapsed, 1),
            "latency_ms_p50": round(statistics.median(ordered) * 1000, 2) if count else float("nan"),
            "latency_ms_p99": round(ordered[min(count - 1, int(count * 0.99))] * 1000, 2) if count else float("nan"),
            "errors": dict(self.errors),
            "error_examples": self.error_examples,
            **extra,
        }


async def closed_loop(
    name: str, call, seconds: float, concurrency: int = CONCURRENCY, tally: Tally | None = None, **extra
) -> dict:
    """`concurrency` workers, each sending its next call as soon as its last one answered. With
    `tally`, the calls add to it (a row measured in several runs) and the row covers all of them."""
    tally = Tally() if tally is None else tally
    stop_at = time.perf_counter() + seconds
    exhausted_after: list[float] = []

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            try:
                await tally.time(call, time.perf_counter())
            except WorkloadExhausted:
                exhausted_after.append(time.perf_counter() - started)
                return

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if exhausted_after:
        extra["exhausted_after_seconds"] = round(min(exhausted_after), 2)
    return tally.row(name, time.perf_counter() - started, **extra)


async def _baseline(address: str, seconds: float) -> dict:
    async with tls.aio_channel(address) as channel:
        ping = channel.unary_unary(f"/{METHOD_SERVICE}/Ping")
        await ping(b"", timeout=30, wait_for_ready=True)

        async def call() -> None:
            await ping(b"", timeout=10)

        await closed_loop("warm-up", call, min(1.0, seconds))
        return await closed_loop("baseline: empty handler", call, seconds)


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


def analyze_schema(database_url: str) -> None:
    """A production database has planner statistics; a schema made seconds ago has none yet."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()


async def _ledger_workloads(address: str, database_url: str, seconds: float, batches: int) -> list[dict]:
    run = uuid.uuid4().hex[:8]
    async with tls.aio_channel(address) as channel:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        hot, wallets = await _prepare(stub, run)
        analyze_schema(database_url)
        rng = random.Random(7)

        sequence = itertools.count()

        def single(prefix: str, debit_of):
            async def call() -> None:
                credit = rng.choice(wallets)
                debit = debit_of()
                while debit == credit:
                    debit = debit_of()
                item = _transfer(f"{prefix}:{run}:{next(sequence)}", debit, credit, 1)
                response = await stub.CreateTransfers(pb.CreateTransfersRequest(transfers=[item]), timeout=30)
                _check_created(response)

            return call

        await closed_loop("warm-up", single("warm", lambda: rng.choice(wallets)), min(1.0, seconds))
        workloads = (
            ("single transfers, random member accounts", "random", lambda: rng.choice(wallets)),
            (f"single transfers, debits on {HOT_ACCOUNTS} hot accounts", "hot", lambda: rng.choice(hot)),
        )
        results = [await closed_loop(name, single(prefix, debit_of), seconds) for name, prefix, debit_of in workloads]
        tally = Tally()
        for number in range(batches):
            items = [
                _transfer(f"batch:{run}:{number}:{n}", rng.choice(wallets), rng.choice(hot), 1)
                for n in range(BATCH_SIZE)
            ]
            request = pb.CreateTransfersRequest(transfers=items)

            async def call(request=request) -> None:
                _check_created(await stub.CreateTransfers(request, timeout=120))

            await tally.time(call, time.perf_counter())
        # Building requests is client work; count only the time spent in calls.
        results.append(tally.row(f"batches of {BATCH_SIZE:,} transfers", sum(tally.latencies), BATCH_SIZE))
        return results


def _check_created(response: pb.CreateTransfersResponse) -> None:
    failed = [result for result in response.results if result.status != pb.ITEM_STATUS_CREATED]
    if failed:
        status = pb.ItemStatus.Name(failed[0].status)
        raise CallFailed(f"item {status}", f"{len(failed)} of {len(response.results)} items: {failed[0]}")


def print_table(results: list[dict], baseline: dict, bare: dict) -> None:
    """One row per workload: `x baseline` divides by the empty handler on our stack (the ledger's
    own targets), `x bare` by the raw grpc.aio empty handler measured at the start of the run, and
    `x near` (rows with targets of issue 8) by the bare rate measured just before and after each of
    the row's runs (BareProbe): the median of the runs' ratios, followed by the bare measurements
    in order (before the first run, between runs, after the last) and each run's ratio."""
    print(
        f"\n{'workload':52} {'items/s':>10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x baseline':>10}"
        f" {'x bare':>7} {'errors':>7} {'x near':>7}  bare around the runs (each run's x near)"
    )
    for result in results:
        if "section" in result:
            print(f"-- {result['section']}")
            continue
        ratio = result["calls_per_second"] / baseline["calls_per_second"]
        ratio_bare = result["calls_per_second"] / bare["calls_per_second"]
        near = ""
        if "x_near" in result:
            runs = result["x_near_runs"]
            each = f" (runs {', '.join(f'{ratio:.3f}' for ratio in runs)})" if len(runs) > 1 else ""
            near = f" {result['x_near']:>7.3f}  {', '.join(f'{rate:,.0f}' for rate in result['bare_near_runs'])}{each}"
        print(
            f"{result['workload']:52} {result['items_per_second']:>10,.0f} {result['calls_per_second']:>9,.0f} "
            f"{result['latency_ms_p50']:>8.2f} {result['latency_ms_p99']:>8.2f} {ratio:>10.2f} {ratio_bare:>7.2f}"
            f" {sum(result.get('errors', {}).values()):>7,}{near}"
        )


def print_failures(results: list[dict]) -> None:
    """Every failure of every row: how many, status and reason, and the first message."""
    failed = [row for row in results if row.get("errors")]
    if failed:
        print("\nfailed calls (count x status reason: first message):")
    for row in failed:
        for key, count in sorted(row["errors"].items()):
            print(f"  {row['workload']}: {count:,} x {key}: {row['error_examples'].get(key, '')}")


def ledger_targets(results: list[dict], baseline: dict) -> list[str]:
    single, hot, batch = results
    base = baseline["calls_per_second"]
    checks = [
        ("single transfers >= 0.5 x baseline", single["calls_per_second"] / base, 0.5, ">="),
        ("hot accounts within 15% of single", hot["calls_per_second"] / single["calls_per_second"], 0.85, ">="),
        ("batches >= 15,000 transfers/s", batch["items_per_second"], 15_000, ">="),
        ("single transfers p99 <= 30 ms", single["latency_ms_p99"], 30.0, "<="),
    ]
    return verdict_lines(checks)


def verdict_lines(checks: list[tuple[str, float, float, str]]) -> list[str]:
    """One `MET`/`MISS` line per (label, value, target, ">=" or "<=")."""
    lines = []
    for label, value, target, op in checks:
        met = value >= target if op == ">=" else value <= target
        lines.append(f"{'MET ' if met else 'MISS'} {label}: {value:,.2f} (target {op} {target:,})")
    return lines


# The raw grpc.aio empty handler on the standard event loop: what every `x bare` ratio divides by.
BARE_SERVER = ["-m", "bench.empty_server", "--bare", "--loop", "asyncio"]


class BareProbe:
    """The raw grpc.aio empty handler (`bare`) kept serving while other rows run, so a row's ratio
    can divide by the bare rate measured right next to it. This machine's speed drifts: a fixed
    pure-Python loop, timed in 10 s windows on an idle machine, ranged 131-190 ms within three
    minutes, so a rate measured minutes before a row measures the drift as much as the code."""

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self._process = _start([*BARE_SERVER, "--address", self.address], {})
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> BareProbe:
        try:  # the raw handler serves no health service: its first ping waits for it instead
            self._channel = tls.aio_channel(self.address)
            self._ping = self._channel.unary_unary(f"/{METHOD_SERVICE}/Ping")
            await self._ping(b"", timeout=30, wait_for_ready=True)
            await closed_loop("warm-up", self._call, 1.0)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *_exc) -> None:
        if self._channel is not None:
            await self._channel.close()
        _stop(self._process)

    async def _call(self) -> None:
        await self._ping(b"", timeout=10)

    async def rate(self, seconds: float) -> float:
        """Bare calls/s over `seconds`, from the same client at the same concurrency as every row."""
        return (await closed_loop("bare", self._call, seconds))["calls_per_second"]


async def measure_baselines(seconds: float) -> tuple[dict, dict, dict]:
    """(bare, baseline, bare on uvloop): the raw grpc.aio empty handler on the standard event loop
    (the `x bare` ratios divide by it), the empty handler on our server stack (uvloop, as the
    services run), and the raw handler on uvloop, shown so the loop's own share is visible."""
    processes = []
    try:
        empty_address = f"127.0.0.1:{free_port()}"
        bare_address = f"127.0.0.1:{free_port()}"
        uvloop_address = f"127.0.0.1:{free_port()}"
        processes.append(_start(["-m", "bench.empty_server", "--address", empty_address], {}))
        processes.append(_start([*BARE_SERVER, "--address", bare_address], {}))
        processes.append(_start(["-m", "bench.empty_server", "--bare", "--address", uvloop_address], {}))
        wait_until_serving(empty_address)
        bare = await _baseline(bare_address, seconds)
        bare["workload"] = "raw grpc.aio empty handler (no interceptor)"
        bare_uvloop = await _baseline(uvloop_address, seconds)
        bare_uvloop["workload"] = "raw grpc.aio empty handler on uvloop"
        baseline = await _baseline(empty_address, seconds)
    finally:
        for process in processes:
            _stop(process)
    return bare, baseline, bare_uvloop


async def measure_ledger(seconds: float, batches: int) -> list[dict]:
    """Single transfers, hot accounts and large batches on one ledger process with a fresh schema."""
    schema = PostgresSchema("bench")
    ledger_address = f"127.0.0.1:{free_port()}"
    process = _start(
        ["-m", "services.ledger.server"],
        {"COALITION_LEDGER_DATABASE_URL": schema.url, "COALITION_LEDGER_LISTEN_ADDRESS": ledger_address},
    )
    try:
        wait_until_serving(ledger_address)
        return await _ledger_workloads(ledger_address, schema.url, seconds, batches)
    finally:
        _stop(process)
        schema.drop()


def require_postgres() -> None:
    reason = postgres_unavailable_reason()
    if reason:
        raise SystemExit(f"make bench needs PostgreSQL: {reason}")


async def _main(arguments) -> None:
    require_postgres()
    tls.use_development_pki()
    seconds = arguments.seconds
    bare, baseline, bare_uvloop = await measure_baselines(seconds)
    results = await measure_ledger(seconds, arguments.batches)
    print(f"\nclient concurrency {CONCURRENCY}, {seconds:.0f} s per workload, PostgreSQL, {os.cpu_count()} cores")
    print_table([baseline, bare, bare_uvloop, *results], baseline, bare)
    print_failures([baseline, bare, bare_uvloop, *results])
    print()
    for line in ledger_targets(results, baseline):
        print(line)
    if arguments.json:
        with open(arguments.json, "w") as out:
            json.dump(
                {"baseline": baseline, "bare": bare, "bare_uvloop": bare_uvloop, "results": results}, out, indent=2
            )


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
