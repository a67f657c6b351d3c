"""Serving a set of servicers: interceptors, health, reflection, TLS and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from services.common import reflection
from services.common.addresses import dialable
from services.common.config import ConfigError, env_int
from services.common.health import DatabaseHealth
from services.common.interceptor import Admission, CallLimits, InstrumentingServer
from services.common.metrics import Metrics
from services.common.tls import Transport

_log = structlog.get_logger("server")

# Responses: the largest is a page or batch result; requests are bounded per service (CallLimits).
SEND_MESSAGE_BYTES_MAX = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client connection may hold, and how long, so a stalled caller is eventually cut.

    gRPC core has no deadline for receiving a call's request; a call that never sends it ends
    with its connection: max_connection_age_ms plus the grace period (or the keepalive when the
    client is gone). Until then it holds one of the connection's streams, never a call slot.
    """

    connections_max: int = 2_000
    # Well above what one client keeps in flight: grpc refuses new streams (RST_STREAM REFUSED_STREAM)
    # before the advertised limit is reached, as finished streams are still counted (64 in flight
    # against 100 was refused ~1 in 1,000 calls under load; make bench).
    streams_per_connection_max: int = 1_000
    connection_idle_ms: int = 5 * 60_000  # no open call for this long: closed
    connection_age_ms: int = 30 * 60_000  # then GOAWAY; clients reconnect (streams resume by cursor)
    connection_age_grace_ms: int = 60_000  # calls still open this long after GOAWAY are cut
    keepalive_time_ms: int = 60_000  # the server pings an idle transport this often ...
    keepalive_timeout_ms: int = 20_000  # ... and drops it when the ack does not come
    client_ping_interval_ms_min: int = 10_000  # clients pinging more often than this get GOAWAY
    handshake_timeout_ms: int = 10_000
    metadata_bytes_max: int = 16 * 1024

    @classmethod
    def from_env(cls, prefix: str) -> ConnectionLimits:
        """Each limit from `<prefix>_GRPC_<NAME>` (e.g. COALITION_LEDGER_GRPC_CONNECTION_AGE_MS)."""
        defaults = cls()
        return cls(
            **{
                name: env_int(f"{prefix}_GRPC_{name.upper()}", getattr(defaults, name), minimum=1)
                for name in cls.__slots__
            }
        )

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_allowed_incoming_connections", self.connections_max),
            ("grpc.max_concurrent_streams", self.streams_per_connection_max),
            ("grpc.max_connection_idle_ms", self.connection_idle_ms),
            ("grpc.max_connection_age_ms", self.connection_age_ms),
            ("grpc.max_connection_age_grace_ms", self.connection_age_grace_ms),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", self.client_ping_interval_ms_min),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.server_handshake_timeout_ms", self.handshake_timeout_ms),
            ("grpc.max_metadata_size", self.metadata_bytes_max),
        ]


@dataclass(frozen=True, slots=True)
class ServerOptions:
    listen_address: str
    # Mutual TLS, or the development plaintext switch (services/common/tls.py).
    transport: Transport
    grace_period_seconds: int = 10
    call_limits: CallLimits = field(default_factory=CallLimits)
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Engines whose reachability decides health (the first is pinged); empty: always SERVING.
    health_engines: Sequence[Engine] = ()
    # The server's series (services/common/metrics.py), served on metrics_address; None: no metrics.
    metrics: Metrics | None = None
    metrics_address: str = ""
    # With tracing on (services/common/tracing.py), the server's spans go to this provider.
    tracer_provider: object | None = None


class RunningServer:
    """A started server plus what it needs to stop gracefully."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        port: int,
        options: ServerOptions,
        on_stopped: Callable[[], Awaitable[None]] | None,
        instrumented: InstrumentingServer,
        health_task: asyncio.Task | None,
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port  # the port bound (listen_address may say 0)
        self.listen_address = options.listen_address
        self.instrumented = instrumented
        self.transport = options.transport
        self._options = options
        self._on_stopped = on_stopped
        self._health_task = health_task
        self.metrics = options.metrics
        self.metrics_port = options.metrics.port if options.metrics is not None else None

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes this server (None: metrics off)."""
        if self.metrics_port is None or not self._options.metrics_address:
            return None
        return f"http://{dialable(self._options.metrics_address, self.metrics_port)}/metrics"

    async def stop(self) -> None:
        # Health first so load balancers stop sending, then let in-flight calls finish.
        # The database watch stops before, so nothing can set SERVING again.
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self._options.grace_period_seconds)
        if self._on_stopped is not None:
            await self._on_stopped()
        if self.metrics is not None:
            self.metrics.stop()
        _log.info("server_stopped", port=self.port)


async def start_server(
    options: ServerOptions,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    on_stopped: Callable[[], Awaitable[None]] | None = None,
) -> RunningServer:
    """Start serving; `register` adds servicers and returns their full service names."""
    # No maximum_concurrent_rpcs: grpc counts a call from its headers, so calls that never send
    # their request would fill it. The instrumentation counts calls once the request has arrived.
    # Tracing off: no interceptor at all, so grpc.aio's per-call interceptor path is not taken.
    interceptors = None
    if options.tracer_provider is not None:
        from services.common import tracing

        interceptors = [tracing.server_interceptor(options.tracer_provider)]
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", options.call_limits.receive_bytes_max),
            ("grpc.max_send_message_length", SEND_MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 0),
            *options.connection_limits.channel_options(),
        ],
    )
    instrumented = InstrumentingServer(server, Admission(options.call_limits), metrics=options.metrics)
    service_names = list(register(instrumented))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in service_names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable(server, [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    port = options.transport.add_port(server, options.listen_address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {options.listen_address}")
    if options.metrics is not None and options.metrics_address:
        options.metrics.serve(options.metrics_address)
    await server.start()
    health_task = None
    if options.health_engines:
        watch = DatabaseHealth(options.health_engines, health_servicer, ["", *service_names])
        health_task = asyncio.create_task(watch.run(), name="database-health")
    _log.info(
        "server_started",
        address=options.listen_address,
        port=port,
        metrics_port=options.metrics.port if options.metrics is not None else None,
        services=service_names,
        transport="plaintext (development)" if options.transport.plaintext else "mutual TLS",
    )
    return RunningServer(server, health_servicer, port, options, on_stopped, instrumented, health_task)


async def run_until_signalled(running: Sequence[RunningServer]) -> None:
    """Block until SIGTERM or SIGINT, then stop every server gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _log.info("shutdown_requested")
    await asyncio.gather(*(server.stop() for server in running))


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, protobuf descriptors, SQLAlchemy metadata,
    the server itself) out of the collector's reach. A full collection walks every tracked object:
    with the start-up heap in it, each one stalled a partners process 60-110 ms in the middle of
    an open-loop Earn run (measured with gc.callbacks); without it, 5-11 ms. Those objects live
    as long as the process, so nothing that could be garbage is frozen: collect first."""
    gc.collect()
    gc.freeze()


def serve_main(start: Callable[[], Awaitable[RunningServer]], io_threads: int) -> None:
    """Entry point of one service process: logging, GIL hand-over, IO threads, serve until signalled."""
    from concurrent.futures import ThreadPoolExecutor

    from services.common import event_loop
    from services.common.config import apply_gil_switch_interval, log_format, log_level
    from services.common.logs import configure_logging

    async def _main() -> None:
        configure_logging(log_format(), log_level())
        apply_gil_switch_interval()
        # Blocking database work runs on the default executor: one thread per connection.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(io_threads, thread_name_prefix="io"))
        running = await start()
        _freeze_startup_heap()
        await run_until_signalled([running])

    try:
        event_loop.run(_main())
    except ConfigError as error:  # found while starting (e.g. in the database): one line, as for settings
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
