"""`make run`: start every service in one process on SQLite files under var/ until Ctrl-C."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog

from services.common import event_loop
from services.common.addresses import DEFAULT_LISTEN_ADDRESSES, dialable
from services.common.config import ConfigError, apply_gil_switch_interval, log_format, log_level
from services.common.grpc_server import RunningServer, run_until_signalled
from services.common.logs import configure_logging
from services.common.mode import environment

# Each module exposes `async def start() -> RunningServer` (settings from the environment)
# and may expose `async def seed_demo() -> None` run once all servers are up.
SERVICES = ("ledger", "partners", "settlement")
SERVICE_MODULES = tuple(f"services.{service}.server" for service in SERVICES)
# Blocking database work of all three services runs on the loop's default executor.
IO_THREADS = 32


async def _main() -> None:
    configure_logging(log_format(), log_level())
    apply_gil_switch_interval()
    log = structlog.get_logger("run")
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="io"))
    modules = [importlib.import_module(name) for name in SERVICE_MODULES]
    running = []
    for module in modules:
        running.append(await module.start())
    for module in modules:
        seed = getattr(module, "seed_demo", None)
        if seed is not None:
            await seed()
    log.info("coalition_running", ports=[server.port for server in running])
    print(banner(running), flush=True)
    await run_until_signalled(running)


def banner(running: Sequence[RunningServer]) -> str:
    """What `make run` prints: the addresses actually bound, and how clients find them."""
    addresses = {
        service: dialable(server.listen_address, server.port) for service, server in zip(SERVICES, running, strict=True)
    }
    transport = running[0].transport
    how = (
        "plaintext (COALITION_DEV_PLAINTEXT=1, development only)"
        if transport.plaintext
        else f"mutual TLS; CA {transport.ca_path}, operator certificate and key next to it"
    )
    lines = [
        "",
        f"The coalition is running ({environment()}): "
        + ", ".join(f"{service} {address}" for service, address in addresses.items())
        + ".",
        f"Transport: {how}.",
        "In another terminal: `make demo` walks a till through earn, hold/capture, return and conversion.",
    ]
    moved = {service: address for service, address in addresses.items() if address != DEFAULT_LISTEN_ADDRESSES[service]}
    if moved:
        settings = " ".join(f"COALITION_{service.upper()}_ADDRESS={address}" for service, address in moved.items())
        lines.append(f"Clients (make demo, coalition-finance) find these ports with: {settings}")
    scraped = [
        f"{service} {server.metrics_url}"
        for service, server in zip(SERVICES, running, strict=True)
        if getattr(server, "metrics_url", None)
    ]
    if scraped:
        lines.append("Metrics (Prometheus): " + ", ".join(scraped))
    lines += ["Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def main() -> None:
    try:
        event_loop.run(_main())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
