"""`make run`: start every service in one process on SQLite files under var/ until Ctrl-C."""

from __future__ import annotations

import asyncio
import importlib
import sys
from concurrent.futures import ThreadPoolExecutor

import structlog

from services.common import event_loop
from services.common.config import ConfigError, apply_gil_switch_interval, log_format, log_level
from services.common.grpc_server import run_until_signalled
from services.common.logs import configure_logging
from services.common.mode import environment

# Each module exposes `async def start() -> RunningServer` (settings from the environment)
# and may expose `async def seed_demo() -> None` run once all servers are up.
SERVICE_MODULES = ("services.ledger.server", "services.partners.server", "services.settlement.server")
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
    ledger, partners, settlement = (f"127.0.0.1:{server.port}" for server in running)
    transport = running[0].transport
    how = (
        "plaintext (COALITION_DEV_PLAINTEXT=1, development only)"
        if transport.plaintext
        else f"mutual TLS; CA {transport.ca_path}, operator certificate and key next to it"
    )
    print(
        f"\nThe coalition is running ({environment()}): ledger {ledger}, partners {partners}, settlement {settlement}."
        f"\nTransport: {how}."
        "\nIn another terminal: `make demo` walks a till through earn, hold/capture, return and conversion."
        "\nCtrl-C stops everything.\n",
        flush=True,
    )
    await run_until_signalled(running)


def main() -> None:
    try:
        event_loop.run(_main())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
