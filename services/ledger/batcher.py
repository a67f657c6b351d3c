"""Merges concurrent CreateTransfers calls into one database transaction per batch.

Checkout traffic is many tiny calls. Applying each in its own transaction would lock a big
retailer's issuance account once per call; merging whatever arrived while the previous batch
was being written locks it once per batch and writes its balance once, so throughput grows
with load instead of collapsing on the hot row. Each call's items still succeed or fail on
their own (chains never span calls); only the transaction is shared.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog
from sqlalchemy import exc as sa_exc

from services.common.errors import PermissionDenied, Unavailable
from services.common.metrics import Metrics
from services.ledger.authorization import Grant
from services.ledger.model import Outcome, TransferCommand
from services.ledger.transfers import TransferRequest

_log = structlog.get_logger("batcher")

Apply = Callable[[list[TransferRequest]], list[list[Outcome] | PermissionDenied]]


class _Waiting:
    __slots__ = ("commands", "future", "grant", "loop")

    def __init__(self, commands: list[TransferCommand], grant: Grant, future: asyncio.Future, loop) -> None:
        self.commands = commands
        self.grant = grant
        self.future = future
        self.loop = loop


def _settle(settlements: list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
    for future, result, error in settlements:
        if future.done():  # the caller went away (deadline, cancel); the write still stands
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _wake(taken: list[_Waiting], results: list | None, error: BaseException | None) -> None:
    """One wake-up per event loop per batch, not one per call: each wake-up is a syscall."""
    by_loop: dict = {}
    for index, waiting in enumerate(taken):
        result = None if results is None else results[index]
        if isinstance(result, PermissionDenied):  # this call was refused whole; its neighbours were not
            by_loop.setdefault(waiting.loop, []).append((waiting.future, None, result))
            continue
        by_loop.setdefault(waiting.loop, []).append((waiting.future, result, error))
    for loop, settlements in by_loop.items():
        loop.call_soon_threadsafe(_settle, settlements)


class TransferBatcher:
    def __init__(
        self,
        apply: Apply,
        writer_count: int,
        batch_items_max: int,
        queued_items_max: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._apply = apply
        self._metrics = metrics
        if metrics is not None:
            metrics.queue_depth.set_function(lambda: self._queued_items)
        self._batch_items_max = batch_items_max
        self._queued_items_max = queued_items_max
        self._queued_items = 0
        self._waiting: deque[_Waiting] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._writers = [
            threading.Thread(target=self._run, name=f"ledger-writer-{n}", daemon=True) for n in range(writer_count)
        ]
        for writer in self._writers:
            writer.start()

    async def submit(self, commands: list[TransferCommand], grant: Grant) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._condition:
            if self._stopping:
                raise Unavailable("SHUTTING_DOWN", "the ledger is shutting down; retry with the same ids")
            if self._queued_items + len(commands) > self._queued_items_max:
                raise Unavailable(
                    "LEDGER_OVERLOADED",
                    f"more than {self._queued_items_max} transfers are waiting to be written; retry with the same ids",
                )
            self._queued_items += len(commands)
            self._waiting.append(_Waiting(commands, grant, future, loop))
            self._condition.notify()
        return await future

    def stop(self) -> None:
        """Finish what is queued, then stop the writers."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for writer in self._writers:
            writer.join()

    def _take(self) -> list[_Waiting] | None:
        with self._condition:
            while not self._waiting:
                if self._stopping:
                    return None
                self._condition.wait()
            taken = [self._waiting.popleft()]
            items = len(taken[0].commands)
            while self._waiting and items + len(self._waiting[0].commands) <= self._batch_items_max:
                items += len(self._waiting[0].commands)
                taken.append(self._waiting.popleft())
            self._queued_items -= items
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            self._apply_merged(taken)

    def _apply_merged(self, taken: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            results = self._apply([TransferRequest(waiting.commands, waiting.grant) for waiting in taken])
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:  # the database itself: all fail alike
            _log.warning("transfer_batch_failed", error=repr(error), calls=len(taken))
            _wake(taken, None, error)
            return
        except Exception as error:
            if len(taken) == 1:
                _log.warning("transfer_batch_failed", error=repr(error), calls=1)
                _wake(taken, None, error)
                return
            # One call's bad data must not fail the calls merged with it: apply each on its own.
            _log.warning("transfer_batch_split", error=repr(error), calls=len(taken))
            for waiting in taken:
                self._apply_merged([waiting])
            return
        _wake(taken, results, None)
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.commit_seconds.observe(elapsed)
            self._metrics.batch_calls.observe(len(taken))
            self._metrics.batch_transfers.observe(sum(len(w.commands) for w in taken))
        _log.debug(
            "transfer_batch_applied",
            calls=len(taken),
            items=sum(len(w.commands) for w in taken),
            duration_ms=round(elapsed * 1000, 3),
        )
