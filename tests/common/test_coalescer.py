"""The Coalescer's linger: under load a batch waits briefly for more calls, a lone call never does."""

from __future__ import annotations

import asyncio
import time

from services.common.coalescer import Coalescer

LINGER = 0.5


async def _handle(items: list[int]) -> list[int]:
    await asyncio.sleep(0.01)
    return [item * 10 for item in items]


def test_a_lone_call_never_waits_for_company():
    async def scenario() -> list[float]:
        coalescer = Coalescer("test", _handle, 100, 1_000, linger_seconds=LINGER)
        took = []
        for item in range(4):
            started = time.monotonic()
            assert await coalescer.submit(item) == item * 10
            took.append(time.monotonic() - started)
        assert coalescer.batch_sizes == {1: 4}
        return took

    assert max(asyncio.run(scenario())) < LINGER / 2


def test_under_load_a_batch_waits_for_the_calls_arriving_just_after_it():
    async def scenario() -> None:
        coalescer = Coalescer("test", _handle, 100, 1_000, linger_seconds=LINGER)
        assert await asyncio.gather(*(coalescer.submit(n) for n in range(3))) == [0, 10, 20]  # one batch of 3

        async def late(item: int) -> int:
            await asyncio.sleep(LINGER / 5)
            return await coalescer.submit(item)

        # After a merged batch, the next one waits: the calls arriving within the linger join it.
        assert await asyncio.gather(coalescer.submit(7), late(8), late(9)) == [70, 80, 90]
        assert coalescer.batch_sizes == {3: 2}

    asyncio.run(scenario())


def test_without_linger_a_batch_starts_at_once():
    async def scenario() -> None:
        coalescer = Coalescer("test", _handle, 100, 1_000)
        await asyncio.gather(*(coalescer.submit(n) for n in range(3)))

        async def late(item: int) -> int:
            await asyncio.sleep(0.05)
            return await coalescer.submit(item)

        await asyncio.gather(coalescer.submit(7), late(8))
        assert coalescer.batch_sizes == {3: 1, 1: 2}

    asyncio.run(scenario())
