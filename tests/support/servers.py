"""Real gRPC servers for tests: in a background thread (fast) or as separate processes.

Both run the production `start()` of a service against a real database on a loopback port;
nothing here stands in for a service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import RunningServer
from tests.support.tls import channel as tls_channel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ThreadedServer:
    """Runs `start()` (a service's async start function) on its own event loop thread."""

    def __init__(self, start: Callable[[], Awaitable[RunningServer]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="test-server")
        self._thread.start()
        self.running: RunningServer = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=60)
        self.address = f"127.0.0.1:{self.running.port}"

    def run(self, coroutine: Awaitable, timeout_seconds: float = 60):
        """Run a coroutine on the server's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout_seconds)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(address: str, timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    with tls_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no server became healthy at {address}")
            time.sleep(0.1)


class ProcessServer:
    """A service as a separate OS process (`python -m <module>`), e.g. two ledgers on one database."""

    def __init__(self, module: str, env: dict[str, str], address: str, log_path: str | None = None) -> None:
        self.address = address
        # With log_path its log lines go to that file (read it after stop()); else to a pipe
        # read only if it fails to start.
        self._log = open(log_path, "wb") if log_path else None  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log or subprocess.PIPE,
        )
        try:
            wait_until_serving(address)
        except TimeoutError:
            self.process.kill()
            detail = self.process.stderr.read().decode()[-4000:] if self.process.stderr else f"see {log_path}"
            raise RuntimeError(detail) from None

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.stderr:
                self.process.stderr.close()
            if self._log:
                self._log.close()


def start_ledger_thread(database_url: str, span_processor=None, **overrides) -> ThreadedServer:
    """A ledger server on a free loopback port; `span_processor` receives its spans (tracing on)."""
    from services.ledger.server import LedgerSettings, start

    settings = LedgerSettings.from_env()
    values = {
        "database_url": database_url,
        "listen_address": "127.0.0.1:0",
        "writer_count": 1 if database_url.startswith("sqlite") else 2,
        "grpc_grace_period_seconds": 2,
        **overrides,
    }
    settings = type(settings)(**{**{f: getattr(settings, f) for f in settings.__slots__}, **values})
    return ThreadedServer(lambda: start(settings, span_processor=span_processor))


def start_ledger_process(database_url: str) -> ProcessServer:
    port = free_port()
    env = {
        "COALITION_LEDGER_DATABASE_URL": database_url,
        "COALITION_LEDGER_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "COALITION_LOG_LEVEL": "warning",
    }
    return ProcessServer("services.ledger.server", env, f"127.0.0.1:{port}")


def start_partners_process(
    database_url: str, ledger_address: str, admin_api_key: str, log_path: str | None = None
) -> ProcessServer:
    """A partners server as its own process; with log_path, its info log goes to that file."""
    port = free_port()
    env = {
        "COALITION_PARTNERS_DATABASE_URL": database_url,
        "COALITION_PARTNERS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "COALITION_LEDGER_ADDRESS": ledger_address,
        "COALITION_ADMIN_API_KEY": admin_api_key,
        "COALITION_LOG_LEVEL": "info" if log_path else "warning",
    }
    return ProcessServer("services.partners.server", env, f"127.0.0.1:{port}", log_path)


def start_partners_thread(
    database_url: str,
    ledger_address: str,
    admin_api_key: str,
    clock=None,
    rate_limit_clock=None,
    span_processor=None,
    **overrides,
) -> ThreadedServer:
    """A partners server on a free loopback port; `clock` (microseconds) moves its time,
    `rate_limit_clock` (monotonic nanoseconds) the time its rate limits see; `span_processor`
    receives its spans (tracing on)."""
    import dataclasses

    from services.partners.server import PartnersSettings, start

    settings = dataclasses.replace(
        PartnersSettings.from_env(),
        database_url=database_url,
        listen_address="127.0.0.1:0",
        ledger_address=ledger_address,
        admin_api_key=admin_api_key,
        grpc_grace_period_seconds=1,
        **overrides,
    )
    clocks = {"clock": clock, "rate_limit_clock": rate_limit_clock, "span_processor": span_processor}
    given = {name: value for name, value in clocks.items() if value is not None}
    return ThreadedServer(lambda: start(settings, **given))
