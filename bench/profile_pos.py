"""Profile one POS workload: the bench's cluster (1 partners + 1 ledger on PostgreSQL, or `--pairs 2`), seeded
the same way, with py-spy recording both servers while the workload runs.

    .venv/bin/python -m bench.profile_pos --workload earn --seconds 20 --out /tmp/profile

writes `partners-1.txt` and `ledger-1.txt` (py-spy's collapsed stacks, `--format raw`) and the
servers' logs (`logs/`) into `--out`, and prints the calls/s of the run. py-spy is not a project
dependency: `pip install py-spy` into the venv first.

`--split` names every call of the run (`x-request-id`) and splits what the client waited into
before partners' handler started, in the handler (its `rpc_finished` duration) and after it
returned, from the client's send and answer times and the handler's log line (one clock: the
same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime

from bench import pos_bench, tls
from bench.pos_bench import Cluster, PosClient, Till, require_postgres, seed

WORKLOADS = ("earn", "quote_earn", "balance", "redeem", "convert")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (and its reaped children), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):  # a PostgreSQL backend that just ended
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICKS_PER_SECOND


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class _NamingStub:
    """A partners stub whose calls carry their own `x-request-id`; when each was sent and answered
    (wall clock, as the servers' log timestamps) goes into `times`."""

    def __init__(self, stub, ids: itertools.count, times: dict[str, tuple[float, float]]) -> None:
        self._stub, self._ids, self._times = stub, ids, times

    def __getattr__(self, method: str):
        rpc = getattr(self._stub, method)

        async def call(request, metadata=(), **options):
            request_id = f"split-{next(self._ids)}"
            sent = time.time()
            try:
                return await rpc(request, metadata=(*metadata, ("x-request-id", request_id)), **options)
            finally:
                self._times[request_id] = (sent, time.time())

        return call


def _name_calls(client: PosClient) -> dict[str, tuple[float, float]]:
    times: dict[str, tuple[float, float]] = {}
    ids = itertools.count()
    next_stub = client.next
    client.next = lambda: _NamingStub(next_stub(), ids, times)  # type: ignore[method-assign]
    return times


def _print_split(times: dict[str, tuple[float, float]], log_directory: str) -> None:
    """Client wait = before the handler + in it + after it, per method, for the calls named by
    `_name_calls`."""
    labels = ("before the handler", "in the handler", "after the handler")
    by_method: dict[str, list[tuple[float, float, float]]] = {}
    for name in sorted(os.listdir(log_directory)):
        if not name.startswith("partners-"):
            continue
        with open(os.path.join(log_directory, name)) as log:
            for line in log:
                if '"split-' not in line or not line.startswith("{"):
                    continue
                entry = json.loads(line)
                if entry.get("event") != "rpc_finished" or entry.get("request_id") not in times:
                    continue
                sent, answered = times[entry["request_id"]]
                finished = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
                started = finished - entry["duration_ms"] / 1000
                split = ((started - sent) * 1000, entry["duration_ms"], (answered - finished) * 1000)
                by_method.setdefault(entry["rpc_method"].rsplit("/", 1)[-1], []).append(split)
    for method, splits in sorted(by_method.items()):
        print(f"  {method}: where the client's wait went ({len(splits):,} calls found in the logs)")
        for index, label in enumerate(labels):
            values = sorted(split[index] for split in splits)
            count = len(values)
            p50, p90 = values[count // 2], values[int(count * 0.9)]
            print(f"  {label:>20}: p50 {p50:7.2f} ms, p90 {p90:7.2f} ms, mean {sum(values) / count:7.2f} ms")


def _cpu_by_part(servers) -> dict[str, float]:
    parts = {server.name: _cpu_seconds(server.process.pid) for server in servers}
    parts["client"] = _cpu_seconds(os.getpid())
    parts["postgres"] = sum(_cpu_seconds(pid) for pid in _postgres_pids())
    return parts


async def _run(
    workload: str,
    seconds: float,
    concurrency: int,
    out: str,
    spy_on: bool,
    rate: float,
    native: bool,
    split: bool,
    pairs: int,
) -> None:
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if spy_on and spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    # The servers' logs go next to the profiles (each run overwrites them): their rpc_finished
    # lines hold every call's server-side duration.
    log_directory = os.path.join(out, "logs")
    os.makedirs(log_directory, exist_ok=True)
    times: dict[str, tuple[float, float]] | None = None
    cluster = Cluster(log_directory)
    try:
        for _ in range(pairs):
            cluster.add_pair()
        client = PosClient([server.address for server in cluster.partners])
        try:
            coalition = await seed(client, cluster.admin_api_key)
            cluster.analyze()
            times = _name_calls(client) if split else None
            till = Till(client, coalition, random.Random(1))
            call = getattr(till, workload)
            recorders = [
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(server.process.pid),
                        "--duration",
                        str(int(seconds)),
                        "--format",
                        "raw",
                        "--rate",
                        "200",
                        "--output",
                        os.path.join(out, f"{server.name}.txt"),
                        # --native unwinds C stacks, which needs the process paused for each sample
                        *([] if native else ["--nonblocking"]),
                        "--gil",  # only the thread holding the GIL: Python's CPU, not threads waiting on I/O
                        *(["--native"] if native else []),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for server in (cluster.servers() if spy_on else [])
            ]  # sampling costs the servers CPU: --no-spy for clean CPU figures
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    await call()
                    done += 1

            cpu_before = _cpu_by_part(cluster.servers())
            started = time.perf_counter()
            if rate:
                row = await pos_bench.open_loop(workload, call, rate, seconds)
                done = row["calls"]
            else:
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            cpu_after = _cpu_by_part(cluster.servers())
            for recorder in recorders:
                recorder.wait()
            print(f"{workload}: {done / elapsed:,.0f} calls/s over {elapsed:.1f} s; profiles and logs in {out}")
            if rate:
                print(f"  open loop at {rate:,.0f}/s: p50 {row['latency_ms_p50']} ms, p99 {row['latency_ms_p99']} ms")
            # CPU per call says where the work is, whatever else shares the machine.
            for part, before in cpu_before.items():
                used = cpu_after[part] - before
                print(f"  {part:>12}: {1000 * used / max(done, 1):6.2f} ms CPU per call, {used / elapsed:4.2f} cores")
        finally:
            await client.close()
    finally:
        cluster.stop()
    if times is not None:  # the servers have stopped: their logs are complete
        _print_split(times, log_directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=WORKLOADS, default="earn")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", default="/tmp/profile")
    parser.add_argument("--members", type=int, default=pos_bench.MEMBERS, help="members seeded (fewer: faster)")
    parser.add_argument("--no-spy", action="store_true", help="CPU per call only, no sampling")
    parser.add_argument("--native", action="store_true", help="sample C frames too (gRPC core, uvloop)")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop at this many calls/s instead of closed")
    parser.add_argument("--split", action="store_true", help="split each call's wait: before, in, after the handler")
    parser.add_argument(
        "--pairs", type=int, default=1, help="(partners, ledger) pairs, calls spread over them as in the bench"
    )
    arguments = parser.parse_args()
    os.makedirs(arguments.out, exist_ok=True)
    pos_bench.MEMBERS = arguments.members
    require_postgres()
    tls.use_development_pki()
    asyncio.run(
        _run(
            arguments.workload,
            arguments.seconds,
            arguments.concurrency,
            arguments.out,
            not arguments.no_spy,
            arguments.rate,
            arguments.native,
            arguments.split,
            arguments.pairs,
        )
    )


if __name__ == "__main__":
    main()
