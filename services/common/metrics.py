"""Prometheus metrics of one running server: its own registry, its series, its HTTP endpoint.

Each server owns a `Metrics` (made in its server.py, handed to what records), never the
process-wide default registry: `make run` and the tests run several servers in one process, and
each serves its own series on its own port (COALITION_<SERVICE>_METRICS_ADDRESS).

The per-RPC series are recorded once per call by services/common/interceptor.py through an
`RpcSeries` bound to the method when the handler is wrapped: the label lookups happen once per
method (and status), not once per call.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from services.common.config import ConfigError

if TYPE_CHECKING:
    from services.common.db import Database

# COALITION_<SERVICE>_METRICS_ADDRESS defaults; "" or "off" turns the endpoint off.
DEFAULT_METRICS_ADDRESSES = {"ledger": "127.0.0.1:9151", "partners": "127.0.0.1:9152", "settlement": "127.0.0.1:9153"}
OFF = ("", "off")

# Seconds. RPCs take from a few hundred microseconds (a cached read) to seconds (a period close).
RPC_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Calls merged into one ledger batch (at most BATCH_ITEMS_MAX transfers, services/ledger/limits.py).
BATCH_CALLS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 8192)
BATCH_TRANSFERS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Settlement closes and reconciliations read a month of the ledger: seconds to minutes.
SETTLEMENT_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def metrics_address_setting(service: str) -> str:
    """COALITION_<SERVICE>_METRICS_ADDRESS: host:port to serve /metrics on, or "" when off."""
    name = f"COALITION_{service.upper()}_METRICS_ADDRESS"
    value = os.environ.get(name)
    value = DEFAULT_METRICS_ADDRESSES[service] if value is None else value.strip()  # set but empty: off
    if value.lower() in OFF:
        return ""
    parse_address(value, name)
    return value


def parse_address(address: str, setting: str = "metrics address") -> tuple[str, int]:
    """`127.0.0.1:9151` -> ("127.0.0.1", 9151); `[::1]:0` -> ("::1", 0); port 0 picks a free port."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65_535:
        raise ConfigError(f"{setting} must be host:port (port 0..65535), or off; got {address!r}")
    return host.strip("[]"), int(port)


class RpcSeries:
    """One method's request count (by status code) and latency histogram, bound once."""

    __slots__ = ("_by_code", "_count", "_method", "_observe")

    def __init__(self, metrics: Metrics, method: str) -> None:
        self._method = method
        self._count = metrics.rpc_requests
        self._observe = metrics.rpc_seconds.labels(method).observe
        self._by_code: dict[str, Callable[[], None]] = {}

    def record(self, code: str, seconds: float) -> None:
        increment = self._by_code.get(code)
        if increment is None:
            increment = self._by_code[code] = self._count.labels(self._method, code).inc
        increment()
        self._observe(seconds)


class Metrics:
    """The series of one server of `service` (ledger, partners or settlement)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = registry = CollectorRegistry()
        self._http = None
        self.port: int | None = None  # the port /metrics is served on, once serving
        self._rpc_series: dict[str, RpcSeries] = {}
        self.rpc_requests = Counter(
            "coalition_rpc_requests",
            "RPCs handled, by full method name and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self.rpc_seconds = Histogram(
            "coalition_rpc_duration_seconds",
            "Time from a request's arrival to its answer, by full method name",
            ["method"],
            buckets=RPC_SECONDS_BUCKETS,
            registry=registry,
        )
        self.transaction_retries = Counter(
            "coalition_db_transaction_retries",
            "Units of work run again after a deadlock, serialization failure, lock timeout or lost connection",
            registry=registry,
        )
        self.pool_checked_out = Gauge(
            "coalition_db_pool_checked_out_connections",
            "Database connections in use, by pool (writer, reader)",
            ["pool"],
            registry=registry,
        )
        self.pool_size = Gauge(
            "coalition_db_pool_size_connections", "Database connections a pool may open", ["pool"], registry=registry
        )
        if service == "ledger":
            self._ledger_series(registry)
        elif service == "partners":
            self.recovery_backlog = Gauge(
                "coalition_partners_recovery_backlog",
                "Rows of each kind left unfinished by their client and older than the recovery age"
                " (earn, return, conversion, hold), counted after each recovery pass",
                ["kind"],
                registry=registry,
            )
        elif service == "settlement":
            self.close_seconds = Histogram(
                "coalition_settlement_close_duration_seconds",
                "Time to close (or validate the close of) a settlement period, by outcome (ok, error)",
                ["outcome"],
                buckets=SETTLEMENT_SECONDS_BUCKETS,
                registry=registry,
            )
            self.reconcile_seconds = Histogram(
                "coalition_settlement_reconcile_duration_seconds",
                "Time to reconcile a partner's file against the ledger, by outcome (ok, error)",
                ["outcome"],
                buckets=SETTLEMENT_SECONDS_BUCKETS,
                registry=registry,
            )

    def _ledger_series(self, registry: CollectorRegistry) -> None:
        self.batch_calls = Histogram(
            "coalition_ledger_batch_calls",
            "CreateTransfers calls merged into one database transaction",
            buckets=BATCH_CALLS_BUCKETS,
            registry=registry,
        )
        self.batch_transfers = Histogram(
            "coalition_ledger_batch_transfers",
            "Transfers written by one batch transaction",
            buckets=BATCH_TRANSFERS_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "coalition_ledger_batch_commit_duration_seconds",
            "Time to apply and commit one batch transaction (retries included)",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "coalition_ledger_queued_transfers",
            "Transfers waiting for a writer",
            registry=registry,
        )
        self.hold_sweep_backlog = Gauge(
            "coalition_ledger_hold_sweep_backlog",
            "Expired holds the latest sweep pass found still open (it releases them, page by page)",
            registry=registry,
        )
        self.holds_released = Counter(
            "coalition_ledger_holds_released",
            "Expired holds released by the sweeper",
            registry=registry,
        )

    # ------------------------------------------------------------------ wiring

    def rpc(self, method: str) -> RpcSeries:
        series = self._rpc_series.get(method)
        if series is None:
            series = self._rpc_series[method] = RpcSeries(self, method)
        return series

    def watch_database(self, database: Database) -> None:
        """Pool use read at scrape time, and the database's transaction retries counted here."""
        pools = (
            {"writer": database.writer}
            if database.reader is database.writer
            else {
                "writer": database.writer,
                "reader": database.reader,
            }
        )
        for name, engine in pools.items():
            pool = engine.pool
            self.pool_checked_out.labels(name).set_function(pool.checkedout)
            self.pool_size.labels(name).set(pool.size())
        database.on_retry = self.transaction_retries.inc

    # ------------------------------------------------------------------ serving

    def serve(self, address: str) -> int:
        """Serve /metrics (any path, in fact) on `address` in a thread; returns the port bound."""
        host, port = parse_address(address)
        try:
            self._http, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as error:
            raise ConfigError(f"cannot serve {self.service} metrics on {address}: {error}") from error
        self.port = self._http.server_port
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


@contextmanager
def timed(histogram: Histogram | None) -> Iterator[None]:
    """Observe the block's duration in `histogram` (labelled by outcome: ok or error); None: nothing."""
    if histogram is None:
        yield
        return
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        histogram.labels(outcome).observe(time.perf_counter() - started)


def timed_use_case(histogram_name: str):
    """Decorate an async use case whose first argument is a context with a `metrics` attribute
    (None when metrics are off): its duration goes to that Metrics' `histogram_name`."""

    def decorate(use_case):
        @functools.wraps(use_case)
        async def run(context, *args, **kwargs):
            metrics = getattr(context, "metrics", None)
            with timed(getattr(metrics, histogram_name) if metrics is not None else None):
                return await use_case(context, *args, **kwargs)

        return run

    return decorate
