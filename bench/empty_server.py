"""The baseline: a gRPC server on our own stack whose one method does nothing.

`--bare` drops our interceptor (request context + one log line per RPC) to show the raw
Python gRPC ceiling; by default the handler runs through exactly what ledger calls run through.
`--loop asyncio` runs it on the standard event loop instead of uvloop, which the services use.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace

import grpc

from services.common import event_loop
from services.common.config import log_format, log_level
from services.common.grpc_server import ServerOptions, run_until_signalled, start_server
from services.common.interceptor import CallLimits
from services.common.logs import configure_logging
from services.common.tls import Transport

METHOD_SERVICE = "coalition.bench.v1.BenchService"


async def _ping(request: bytes, context) -> bytes:
    return b""


def _register(server: grpc.aio.Server):
    handler = grpc.method_handlers_generic_handler(METHOD_SERVICE, {"Ping": grpc.unary_unary_rpc_method_handler(_ping)})
    server.add_generic_rpc_handlers((handler,))
    return []


async def _main(address: str, bare: bool) -> None:
    configure_logging(log_format(), log_level())
    if bare:
        server = grpc.aio.server()
        _register(server)
        Transport.development("ledger").add_port(server, address)
        await server.start()
        await server.wait_for_termination()
        return
    # CallLimits.receive_bytes_max is max() of the default and the per-method sizes, which fails
    # when no method has its own size; naming Ping at the default size admits exactly the same.
    limits = CallLimits()
    limits = replace(limits, request_bytes_max_by_method={"Ping": limits.request_bytes_max_default})
    running = await start_server(
        ServerOptions(listen_address=address, transport=Transport.development("ledger"), call_limits=limits), _register
    )
    await run_until_signalled([running])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the services run on uvloop")
    arguments = parser.parse_args()
    if arguments.loop == "uvloop":
        event_loop.run(_main(arguments.address, arguments.bare))
    else:
        asyncio.run(_main(arguments.address, arguments.bare))
