"""Merges concurrent calls of one kind into batches, the way the ledger's batcher merges transfers.

Tills send many small calls at once. Handling each alone costs a partners transaction and a
ledger call per call; handling whatever arrived while the previous batch was in flight costs one
of each per batch, so throughput grows with load. The handler returns one result per item, an
exception for an item that failed on its own; an exception from the handler itself fails the
whole batch alike (the database or the ledger is unreachable: every caller may retry).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from services.common import logs, tracing
from services.common.errors import Unavailable

C = TypeVar("C")
R = TypeVar("R")

_log = structlog.get_logger("coalescer")


class Coalescer(Generic[C, R]):
    def __init__(
        self,
        name: str,
        handle: Callable[[list[C]], Awaitable[list[R | BaseException]]],
        batch_items_max: int,
        queued_items_max: int,
        batches_in_flight_max: int = 1,
        size: Callable[[C], int] = lambda _item: 1,
        tracer=None,
        linger_seconds: float = 0.0,
    ) -> None:
        self._name = name
        self._handle = handle
        self._batch_items_max = batch_items_max
        self._queued_items_max = queued_items_max
        # One by default: what arrives while a batch runs waits for it and makes the next, larger
        # batch. Every merged path measured better so (partners app.py, group_commit.py, ledger_client.py).
        self._batches_in_flight_max = batches_in_flight_max
        self._batches_in_flight = 0
        self._size = size  # what an item counts against batch_items_max (e.g. its transfers)
        # Under load (the last batch merged calls), a batch waits this long for more calls
        # before it starts; a call after a lone call never waits (the first after a burst may,
        # once). For paths whose batch costs far more than
        # an item (a read: one downstream call whatever its size).
        self._linger_seconds = linger_seconds
        self._last_batch_items = 0
        # Tracing on (services/common/tracing.py): each batch is a span linked to its calls' spans.
        self._tracer = tracer
        # (item, its caller's future, the caller's span context when tracing is on)
        self._queue: deque[tuple[C, asyncio.Future, object]] = deque()
        # How many batches of each size ran (bounded: sizes go up to batch_items_max), so tests
        # and operators can see that calls are merged.
        self.batch_sizes: Counter[int] = Counter()

    async def submit(self, item: C) -> R:
        if len(self._queue) >= self._queued_items_max:
            raise Unavailable(
                "PARTNERS_OVERLOADED",
                f"more than {self._queued_items_max} {self._name} calls are waiting; retry shortly"
                " (a write is safe to retry with the same request_id)",
            )
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a caller that went away must not leave it unread
        span_context = tracing.current_span_context() if self._tracer is not None else None
        self._queue.append((item, future, span_context))
        if self._batches_in_flight < self._batches_in_flight_max:
            self._batches_in_flight += 1
            # The batch's lines name the batch, not the request that happened to start its task.
            asyncio.get_running_loop().create_task(self._drain(), context=logs.work_context(batch=self._name))
        # A caller that goes away (deadline, cancel) leaves its item in the batch: what it
        # started still completes, and its retry with the same request_id gets the answer.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self._linger_seconds and self._last_batch_items > 1 and len(self._queue) < self._batch_items_max:
                    await asyncio.sleep(self._linger_seconds)
                taken = [self._queue.popleft()]
                items = self._size(taken[0][0])
                while self._queue and items + self._size(self._queue[0][0]) <= self._batch_items_max:
                    items += self._size(self._queue[0][0])
                    taken.append(self._queue.popleft())
                await self._run(
                    [item for item, _, _ in taken], [future for _, future, _ in taken], [span for _, _, span in taken]
                )
        finally:
            self._batches_in_flight -= 1

    async def _run(self, items: list[C], futures: list[asyncio.Future], span_contexts: list) -> None:
        self.batch_sizes[len(items)] += 1
        self._last_batch_items = len(items)
        try:
            if self._tracer is None:
                results = await self._handle(items)
            else:
                with tracing.batch_span(self._tracer, self._name, span_contexts, len(items)):
                    results = await self._handle(items)
        except Exception as error:  # the batch as a whole: every caller gets the same answer
            _log.warning("batch_failed", kind=self._name, items=len(items), error=repr(error))
            results = [error] * len(items)
        for future, result in zip(futures, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def outcome(call: Awaitable[R]) -> R | Exception:
    """The call's result, or the exception it raised as a value: one item's answer in a batch."""
    try:
        return await call
    except Exception as error:
        return error
