"""Serving a set of servicers: interceptors, health, reflection, TLS and graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptor import InstrumentingServer

_log = structlog.get_logger("server")

MESSAGE_BYTES_MAX = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerOptions:
    listen_address: str
    grace_period_seconds: int = 10
    concurrent_rpcs_max: int = 1024
    tls_certificate_path: str = ""
    tls_private_key_path: str = ""


class RunningServer:
    """A started server plus what it needs to stop gracefully."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        port: int,
        options: ServerOptions,
        on_stopped: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port
        self._options = options
        self._on_stopped = on_stopped

    async def stop(self) -> None:
        # Health first so load balancers stop sending, then let in-flight calls finish.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self._options.grace_period_seconds)
        if self._on_stopped is not None:
            await self._on_stopped()
        _log.info("server_stopped", port=self.port)


async def start_server(
    options: ServerOptions,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    on_stopped: Callable[[], Awaitable[None]] | None = None,
) -> RunningServer:
    """Start serving; `register` adds servicers and returns their full service names."""
    server = grpc.aio.server(
        maximum_concurrent_rpcs=options.concurrent_rpcs_max,
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 0),
        ],
    )
    service_names = list(register(InstrumentingServer(server)))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in service_names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    if options.tls_certificate_path:
        with open(options.tls_certificate_path, "rb") as cert, open(options.tls_private_key_path, "rb") as key:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(options.listen_address, credentials)
    else:
        port = server.add_insecure_port(options.listen_address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {options.listen_address}")
    await server.start()
    _log.info("server_started", address=options.listen_address, port=port, services=service_names)
    return RunningServer(server, health_servicer, port, options, on_stopped)


async def run_until_signalled(running: Sequence[RunningServer]) -> None:
    """Block until SIGTERM or SIGINT, then stop every server gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    _log.info("shutdown_requested")
    await asyncio.gather(*(server.stop() for server in running))


def serve_main(start: Callable[[], Awaitable[RunningServer]], io_threads: int) -> None:
    """Entry point of one service process: logging, GIL hand-over, IO threads, serve until signalled."""
    from concurrent.futures import ThreadPoolExecutor

    from services.common.config import apply_gil_switch_interval, log_format, log_level
    from services.common.logs import configure_logging

    async def _main() -> None:
        configure_logging(log_format(), log_level())
        apply_gil_switch_interval()
        # Blocking database work runs on the default executor: one thread per connection.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(io_threads, thread_name_prefix="io"))
        running = await start()
        await run_until_signalled([running])

    asyncio.run(_main())
