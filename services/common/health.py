"""grpc.health.v1 follows the database: NOT_SERVING while a service cannot reach it.

A background task checks about once a second. A real query that succeeded since the last check
counts as a success (a busy service is never pinged, and a pool exhausted by real work is not
mistaken for an outage); otherwise it pings the first engine with `SELECT 1` on the default
executor, bounded by a short timeout. Health flips after a few results in a row, so one stale
pooled connection does not flap it, and the status of "" and of every service name flips together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
from grpc_health.v1 import health, health_pb2
from sqlalchemy import Engine, event

_log = structlog.get_logger("health")

CHECK_INTERVAL_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 0.8
# With these, an outage shows within about 3 s: two failed checks, the second at most ~2.8 s in.
FAILURES_TO_NOT_SERVING = 2
SUCCESSES_TO_SERVING = 2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth:
    def __init__(
        self,
        engines: Sequence[Engine],
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        interval_seconds: float = CHECK_INTERVAL_SECONDS,
        ping_timeout_seconds: float = PING_TIMEOUT_SECONDS,
    ) -> None:
        self._engines = tuple({id(engine): engine for engine in engines}.values())
        self._ping_engine = engines[0]
        self._health = health_servicer
        self._service_names = tuple(service_names)
        self._interval_seconds = interval_seconds
        self._ping_timeout_seconds = ping_timeout_seconds
        self._query_succeeded_at = 0.0  # monotonic; written by worker threads, read on the loop
        self._checked_at = 0.0
        self._ping: asyncio.Future | None = None
        self.serving = True
        self._streak = 0  # results in a row that disagree with `serving`
        for engine in engines:
            event.listen(engine, "after_cursor_execute", self._on_query_succeeded)

    def _on_query_succeeded(self, *_args) -> None:
        self._query_succeeded_at = time.monotonic()

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval_seconds)
                await self._record(await self._check())
        finally:
            for engine in self._engines:
                event.remove(engine, "after_cursor_execute", self._on_query_succeeded)

    async def _check(self) -> bool:
        try:
            if self._query_succeeded_at > self._checked_at:
                return True
            if self._ping is None or self._ping.done():
                # One ping at a time: a ping stuck on a dead network keeps counting as a failure.
                self._ping = asyncio.get_running_loop().run_in_executor(None, self._run_ping)
            await asyncio.wait_for(asyncio.shield(self._ping), self._ping_timeout_seconds)
            return True
        except asyncio.CancelledError:
            raise
        except Exception:  # any failure to reach the database, timeout included, is what we watch for
            return False
        finally:
            # After the ping, so the ping's own query is not taken for a later real one.
            self._checked_at = time.monotonic()

    def _run_ping(self) -> None:
        with self._ping_engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    async def _record(self, ok: bool) -> None:
        if ok == self.serving:
            self._streak = 0
            return
        self._streak += 1
        if self._streak < (SUCCESSES_TO_SERVING if ok else FAILURES_TO_NOT_SERVING):
            return
        self.serving, self._streak = ok, 0
        status = SERVING if ok else NOT_SERVING
        for name in self._service_names:
            await self._health.set(name, status)
        if ok:
            _log.info("database_reachable_again", health="SERVING")
        else:
            _log.warning("database_unreachable", health="NOT_SERVING")
