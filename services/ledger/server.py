"""Ledger wiring: settings, database, migrations, batcher, expiry sweeper, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

import structlog

from coalition.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from services.common.config import env_int, env_str, settings_or_exit, zone_of
from services.common.db import Database, DatabaseOptions, open_migrated
from services.common.grpc_server import ConnectionLimits, RunningServer, ServerOptions, serve_main, start_server
from services.common.interceptor import CallLimits
from services.common.metrics import Metrics, metrics_address_setting
from services.common.tls import Transport
from services.common.tracing import TracingSettings, tracer_provider
from services.ledger import limits
from services.ledger.api import LedgerApi
from services.ledger.batcher import TransferBatcher
from services.ledger.lots import LotRules
from services.ledger.transfers import create_transfers, expire_due_holds, run_expiry

SERVICE_NAME = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
_log = structlog.get_logger("ledger")


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    database_url: str
    listen_address: str
    db_pool_size: int
    db_statement_timeout_ms: int
    writer_count: int
    grpc_grace_period_seconds: int
    grpc_concurrent_rpcs_max: int
    transport: Transport
    time_zone: str = "Europe/Amsterdam"
    reinstatement_days: int = 90
    # Streams (WatchTransfers) have their own pool, so they never take a unary call's slot.
    grpc_concurrent_streams_max: int = limits.WATCH_STREAMS_MAX
    grpc_streams_per_peer_host_max: int = limits.STREAMS_PER_PEER_HOST_MAX
    grpc_connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # host:port of the Prometheus endpoint; "" is off (from the environment: 127.0.0.1:9151 unless "off").
    metrics_address: str = ""
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(cls) -> LedgerSettings:
        url = env_str("COALITION_LEDGER_DATABASE_URL", "sqlite:///var/ledger.db")
        return cls(
            database_url=url,
            listen_address=env_str("COALITION_LEDGER_LISTEN_ADDRESS", "127.0.0.1:50051"),
            db_pool_size=env_int("COALITION_LEDGER_DB_POOL_SIZE", 8, minimum=2, maximum=64),
            db_statement_timeout_ms=env_int("COALITION_DB_STATEMENT_TIMEOUT_MS", 15_000, minimum=100),
            # SQLite has one writer anyway; on PostgreSQL two writers overlap I/O with decisions.
            # One writer merges the most calls per transaction; more overlap database waits but
            # split batches and fight over the GIL (make bench: 1 writer is fastest on 2 cores).
            writer_count=env_int("COALITION_LEDGER_WRITERS", 1, 1, 16),
            grpc_grace_period_seconds=env_int("COALITION_GRPC_GRACE_PERIOD_SECONDS", 10, minimum=0),
            grpc_concurrent_rpcs_max=env_int("COALITION_GRPC_CONCURRENT_RPCS_MAX", 1024, minimum=1),
            transport=Transport.from_env("ledger", "COALITION_LEDGER"),
            time_zone=env_str("COALITION_TIME_ZONE", "Europe/Amsterdam"),
            reinstatement_days=env_int("COALITION_LEDGER_REINSTATEMENT_DAYS", 90, minimum=0, maximum=3_650),
            grpc_concurrent_streams_max=env_int(
                "COALITION_GRPC_CONCURRENT_STREAMS_MAX", limits.WATCH_STREAMS_MAX, 1, limits.WATCH_STREAMS_MAX
            ),
            grpc_streams_per_peer_host_max=env_int(
                "COALITION_GRPC_STREAMS_PER_PEER_HOST_MAX", limits.STREAMS_PER_PEER_HOST_MAX, minimum=1
            ),
            grpc_connection_limits=ConnectionLimits.from_env("COALITION"),
            metrics_address=metrics_address_setting("ledger"),
            tracing=TracingSettings.from_env(),
        )


def open_database(settings: LedgerSettings) -> Database:
    options = DatabaseOptions(
        url=settings.database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    return open_migrated(options, MIGRATIONS, "alembic_version_ledger")


async def _sweep_expired_holds(database: Database, metrics: Metrics | None = None) -> None:
    """Release expired holds in the background; batches also release the ones they touch."""
    while True:
        await asyncio.sleep(limits.EXPIRY_SWEEP_SECONDS)
        try:
            released = limits.EXPIRY_SWEEP_HOLDS_MAX
            found = 0  # the pass's backlog: every hold it found expired and still open
            while released >= limits.EXPIRY_SWEEP_HOLDS_MAX:  # catch up on a backlog, page by page
                released = await asyncio.to_thread(expire_due_holds, database)
                found += released
                if released:
                    _log.info("holds_expired", count=released)
            if metrics is not None:
                metrics.hold_sweep_backlog.set(found)
                metrics.holds_released.inc(found)
        except Exception as error:  # the sweeper must outlive a database blip; reads stay correct meanwhile
            _log.warning("hold_sweep_failed", error=repr(error))


async def _expire_due_lots(database: Database, rules: LotRules) -> None:
    """Expire due lots in the background; after downtime the first pass catches up."""
    while True:
        try:
            run = await asyncio.to_thread(run_expiry, database, None, rules)
            if run.posted or run.deferred:
                _log.info("lots_expired", transfers=run.posted, amount=run.amount_expired, deferred=run.deferred)
        except Exception as error:  # a database blip must not end the loop; the next pass catches up
            _log.warning("lot_expiry_failed", error=repr(error))
        await asyncio.sleep(limits.LOT_EXPIRY_INTERVAL_SECONDS)


async def start(settings: LedgerSettings | None = None, *, span_processor=None) -> RunningServer:
    """Start serving; `span_processor` (tests) receives the spans, tracing on whatever the settings say."""
    settings = settings or LedgerSettings.from_env()
    metrics = Metrics("ledger") if settings.metrics_address else None
    tracing = tracer_provider(settings.tracing, "ledger", span_processor)
    database = await asyncio.to_thread(open_database, settings)
    if metrics is not None:
        metrics.watch_database(database)
    rules = LotRules(zone_of(settings.time_zone), settings.reinstatement_days * 86_400_000_000)
    batcher = TransferBatcher(
        lambda requests: create_transfers(database, requests, rules),
        settings.writer_count,
        limits.BATCH_ITEMS_MAX,
        limits.QUEUED_TRANSFERS_MAX,
        metrics,
    )
    sweeper = asyncio.create_task(_sweep_expired_holds(database, metrics))
    lot_expiry = asyncio.create_task(_expire_due_lots(database, rules))

    def register(server):
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(LedgerApi(database, batcher, rules), server)
        return [SERVICE_NAME]

    async def on_stopped() -> None:
        for task in (sweeper, lot_expiry):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(batcher.stop)
        database.dispose()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)

    options = ServerOptions(
        listen_address=settings.listen_address,
        grace_period_seconds=settings.grpc_grace_period_seconds,
        call_limits=CallLimits(
            unary_calls_max=settings.grpc_concurrent_rpcs_max,
            streams_max=settings.grpc_concurrent_streams_max,
            streams_per_peer_host_max=settings.grpc_streams_per_peer_host_max,
            request_bytes_max_default=limits.REQUEST_BYTES_MAX_DEFAULT,
            request_bytes_max_by_method=limits.REQUEST_BYTES_MAX_BY_METHOD,
        ),
        connection_limits=settings.grpc_connection_limits,
        transport=settings.transport,
        health_engines=(database.writer, database.reader),
        metrics=metrics,
        metrics_address=settings.metrics_address,
        tracer_provider=tracing,
    )
    return await start_server(options, register, on_stopped)


def main() -> None:
    settings = settings_or_exit(LedgerSettings.from_env)
    serve_main(lambda: start(settings), io_threads=settings.db_pool_size)


if __name__ == "__main__":
    main()
