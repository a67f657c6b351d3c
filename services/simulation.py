"""A private ledger and partners pair on a temporary SQLite database, with a simulated clock.

For scenarios that must show months pass in seconds (`make demo-lifecycle`). The running system
never gets any of this: production services have no clock setting and always use the server's
clock. Here both servers run in this process, so the simulated clock can move the ledger's
clock (the module-level `services.ledger.store.clock_offset_us`, the same lever the tests use)
and hand the partners server a clock function, as its `start()` allows.

Everything lives under a fresh temporary directory (databases and a development CA of its own)
and is deleted on close; the services' own environment variables for databases, addresses
and certificates are not read for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import shutil
import tempfile
import threading
import time

import grpc

from coalition.ledger.v1 import ledger_pb2_grpc
from coalition.partners.v1 import partners_pb2_grpc
from services.common.grpc_server import RunningServer
from services.common.mode import DEVELOPMENT, ENV_SETTING
from services.common.tls import DEV_PKI_DIR_SETTING, OPERATOR, Transport
from services.ledger import store as ledger_store

START_TIMEOUT_SECONDS = 60


class SimulatedClock:
    """Microseconds since the epoch, `offset_us` ahead of the real clock; moves the ledger's too."""

    def __init__(self) -> None:
        self.offset_us = 0

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us

    def advance(self, microseconds: int) -> None:
        if microseconds < 0:
            raise ValueError("the simulated clock only moves forward")
        self.offset_us += microseconds
        ledger_store.clock_offset_us = self.offset_us

    def reset(self) -> None:
        self.offset_us = 0
        ledger_store.clock_offset_us = 0


@dataclasses.dataclass
class PrivateCoalition:
    """The running pair: operator stubs for the ledger, a partners stub, the clock, where it lives."""

    directory: str
    clock: SimulatedClock
    ledger: ledger_pb2_grpc.LedgerServiceStub
    partners: partners_pb2_grpc.PartnersServiceStub
    ledger_address: str
    partners_address: str
    time_zone: str
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _servers: list[RunningServer]
    _channels: list[grpc.Channel]
    _saved_environment: dict[str, str | None]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        for server in reversed(self._servers):
            asyncio.run_coroutine_threadsafe(server.stop(), self._loop).result(timeout=START_TIMEOUT_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self.clock.reset()
        _restore(self._saved_environment)
        shutil.rmtree(self.directory, ignore_errors=True)


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def start_private_coalition() -> PrivateCoalition:
    """Start a ledger and a partners server (demo partners and members seeded) on loopback."""
    directory = tempfile.mkdtemp(prefix="coalition-lifecycle-")
    # Development mode and a CA of its own while it runs (the demo seed needs the first); the
    # process's previous values come back on close.
    saved = {name: os.environ.get(name) for name in (ENV_SETTING, DEV_PKI_DIR_SETTING)}
    os.environ[ENV_SETTING] = DEVELOPMENT
    os.environ[DEV_PKI_DIR_SETTING] = os.path.join(directory, "tls")
    clock = SimulatedClock()
    clock.reset()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="private-coalition")
    thread.start()
    try:
        ledger, partners = asyncio.run_coroutine_threadsafe(_start(directory, clock), loop).result(
            timeout=START_TIMEOUT_SECONDS
        )
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        clock.reset()
        _restore(saved)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    ledger_address, partners_address = f"127.0.0.1:{ledger.port}", f"127.0.0.1:{partners.port}"
    ledger_channel = Transport.development(OPERATOR).channel(ledger_address)
    partners_channel = Transport.development(OPERATOR).channel(partners_address)
    from services.ledger.server import LedgerSettings

    return PrivateCoalition(
        directory=directory,
        clock=clock,
        ledger=ledger_pb2_grpc.LedgerServiceStub(ledger_channel),
        partners=partners_pb2_grpc.PartnersServiceStub(partners_channel),
        ledger_address=ledger_address,
        partners_address=partners_address,
        time_zone=LedgerSettings.from_env().time_zone,
        _loop=loop,
        _thread=thread,
        _servers=[ledger, partners],
        _channels=[ledger_channel, partners_channel],
        _saved_environment=saved,
    )


async def _start(directory: str, clock: SimulatedClock) -> tuple[RunningServer, RunningServer]:
    from services.ledger import server as ledger_server
    from services.partners import server as partners_server

    ledger_settings = dataclasses.replace(
        ledger_server.LedgerSettings.from_env(),
        database_url=f"sqlite:///{os.path.join(directory, 'ledger.db')}",
        listen_address="127.0.0.1:0",
        writer_count=1,
        grpc_grace_period_seconds=1,
        transport=Transport.development("ledger"),
    )
    ledger = await ledger_server.start(ledger_settings)
    partners_settings = dataclasses.replace(
        partners_server.PartnersSettings.from_env(),
        database_url=f"sqlite:///{os.path.join(directory, 'partners.db')}",
        listen_address="127.0.0.1:0",
        ledger_address=f"127.0.0.1:{ledger.port}",
        grpc_grace_period_seconds=1,
        transport=Transport.development("partners"),
    )
    partners = await partners_server.start(partners_settings, clock=clock)
    with contextlib.redirect_stdout(io.StringIO()):  # the seed's banner is for `make run`
        await partners_server.seed_demo()
    return ledger, partners
