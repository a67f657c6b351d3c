"""The event loop every service process runs on.

uvloop (libuv) schedules callbacks and futures in C. gRPC's asyncio server spends most of a
call's Python time in the loop's callbacks, and `bench/profile_pos.py` measured 10 to 20 per cent
less CPU per call in partners and ledger on uvloop than on the standard loop, with the same
results. Tests that run servers in threads keep the standard loop: both run the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
