"""Rows the ledger already took whose partners row still says so only in memory.

An earn is recorded (pending) before its ledger call and marked posted after it. Marking it in a
transaction of its own would cost every merged batch a second transaction; instead the marks
wait here and ride with the next batch's recording transaction, or are written by a flush at
most FLUSH_SECONDS after they were added when no batch came. Losing them (a crash) loses nothing:
the row stays pending, and a retry or the recovery pass re-sends the same transfer id, which the
ledger answers as already done, and marks it then.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

_log = structlog.get_logger("partners")

# How long a mark waits for a batch to carry it before it is written on its own.
FLUSH_SECONDS = 0.5
# Marks written by one flush at most; the rest go in the next.
FLUSH_MARKS_MAX = 5_000


class DeferredMarks:
    def __init__(self, write: Callable[[list[str]], Awaitable[None]], flush_seconds: float = FLUSH_SECONDS) -> None:
        self._write = write
        self._flush_seconds = flush_seconds
        # (when added, ids), oldest first: under load every batch takes them all, so the flusher,
        # which waits for the oldest to age, finds nothing to write.
        self._chunks: deque[tuple[float, list[str]]] = deque()
        self._flusher: asyncio.Task | None = None
        # Held while a flush writes, so `flush()` returns only once no write of its marks is in flight.
        self._writing = asyncio.Lock()
        self._closed = False
        # Transactions written for marks alone (no batch carried them): tests and operators see them.
        self.flush_writes = 0
        # Marks a flush is writing right now: not written until that write commits.
        self._in_flight = 0

    def add(self, ids: list[str]) -> None:
        if not ids or self._closed:  # after close: the rows stay pending and recovery marks them
            return
        self._chunks.append((time.monotonic(), list(ids)))
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_when_old())

    def take(self, count_max: int = FLUSH_MARKS_MAX) -> list[str]:
        """The marks a transaction carries; `give_back` them if it does not commit."""
        taken: list[str] = []
        while self._chunks and len(taken) + len(self._chunks[0][1]) <= count_max:
            taken += self._chunks.popleft()[1]
        if not taken and self._chunks:  # one chunk larger than count_max
            taken = self._chunks.popleft()[1]
        return taken

    def give_back(self, ids: list[str]) -> None:
        if ids:
            self._chunks.appendleft((0.0, list(ids)))  # oldest: the flusher writes them first
            self._start_flusher()  # the flusher may have ended while these were taken

    def __len__(self) -> int:
        """Marks not yet committed: waiting, or in a flush's write still in flight."""
        return sum(len(ids) for _, ids in self._chunks) + self._in_flight

    async def flush(self) -> None:
        """Write every waiting mark now, after any flush already writing (shutdown, tests)."""
        async with self._writing:
            while self._chunks:
                taken = self.take()
                self._in_flight = len(taken)
                try:
                    await self._write(taken)
                except BaseException:
                    self.give_back(taken)
                    raise
                finally:
                    self._in_flight = 0
                self.flush_writes += 1

    async def _flush_when_old(self) -> None:
        try:
            while self._chunks:
                age = time.monotonic() - self._chunks[0][0]
                if age < self._flush_seconds:
                    await asyncio.sleep(self._flush_seconds - age)
                    continue
                try:
                    await self.flush()
                except Exception:  # the database is away: the marks wait for the next try
                    _log.warning("deferred_marks_not_written", waiting=len(self), exc_info=True)
                    await asyncio.sleep(self._flush_seconds)
        finally:
            self._flusher = None

    async def close(self) -> None:
        """Stop the flusher, then one last flush; what cannot be written is left to recovery."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)  # its marks are given back
        try:
            await self.flush()
        except Exception:
            _log.warning("deferred_marks_left_to_recovery", waiting=len(self), exc_info=True)
