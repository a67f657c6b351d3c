"""The deferred posted marks (services/partners/deferred_marks.py) on their own: what a batch took
and gave back is still written, `flush()` waits for a write already in flight, and `close()`
writes everything before the database goes."""

from __future__ import annotations

import asyncio

from services.partners.deferred_marks import DeferredMarks

FLUSH_SECONDS = 0.05


class _Database:
    """Records the marks written; a write can be made to wait or to fail."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def write(self, ids: list[str]) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("database away")
        self.written += ids


def test_marks_a_batch_gave_back_after_the_flusher_ended_are_still_written():
    async def scenario():
        database = _Database()
        marks = DeferredMarks(database.write, FLUSH_SECONDS)
        marks.add(["a", "b"])
        taken = marks.take()  # a batch carries them; the flusher then finds nothing and ends
        await asyncio.sleep(3 * FLUSH_SECONDS)
        marks.give_back(taken)  # the batch's transaction failed
        await asyncio.sleep(3 * FLUSH_SECONDS)
        assert sorted(database.written) == ["a", "b"] and len(marks) == 0

    asyncio.run(scenario())


def test_flush_returns_only_after_a_write_already_in_flight():
    async def scenario():
        database = _Database()
        marks = DeferredMarks(database.write, FLUSH_SECONDS)
        database.gate.clear()
        marks.add(["a"])
        await asyncio.sleep(3 * FLUSH_SECONDS)  # the flusher has taken "a" and waits on the database
        assert len(marks) == 1 and database.written == []  # in flight: not written until it commits
        flushing = asyncio.ensure_future(marks.flush())
        await asyncio.sleep(FLUSH_SECONDS)
        assert not flushing.done()
        database.gate.set()
        await flushing
        assert database.written == ["a"] and len(marks) == 0

    asyncio.run(scenario())


def test_close_writes_what_the_flusher_held_and_ignores_later_marks():
    async def scenario():
        database = _Database()
        marks = DeferredMarks(database.write, FLUSH_SECONDS)
        database.gate.clear()
        marks.add(["a"])
        await asyncio.sleep(3 * FLUSH_SECONDS)  # in flight in the flusher
        closing = asyncio.ensure_future(marks.close())
        await asyncio.sleep(FLUSH_SECONDS)
        database.gate.set()
        await closing
        assert database.written == ["a"]
        marks.add(["late"])  # after close: left pending for the recovery pass
        await asyncio.sleep(3 * FLUSH_SECONDS)
        assert database.written == ["a"] and len(marks) == 0

    asyncio.run(scenario())


def test_marks_wait_while_the_database_is_away_and_are_written_when_it_is_back():
    async def scenario():
        database = _Database()
        marks = DeferredMarks(database.write, FLUSH_SECONDS)
        database.fail = True
        marks.add(["a"])
        await asyncio.sleep(4 * FLUSH_SECONDS)
        assert database.written == [] and len(marks) == 1
        database.fail = False
        await asyncio.sleep(4 * FLUSH_SECONDS)
        assert database.written == ["a"]

    asyncio.run(scenario())
