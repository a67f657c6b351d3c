"""The bench's probe of the machine itself (bench/machine.py)."""

from __future__ import annotations

import os
import time

import pytest

from bench import machine


def test_the_stall_probe_counts_a_sleep_that_woke_up_late(monkeypatch):
    # Every third 1 ms sleep takes 12 ms, as if the machine had stopped for 11.
    real_sleep = time.sleep
    count = iter(range(10**9))
    monkeypatch.setattr(machine.time, "sleep", lambda s: real_sleep(0.012 if next(count) % 3 == 2 else s))
    stalls = machine.idle_stalls(0.3)
    assert stalls.sleeps >= 9
    assert stalls.sleeps // 3 <= stalls.stalls <= stalls.sleeps // 3 + 3  # the machine may stall too
    assert stalls.longest_ms >= 10
    assert f"{stalls.stalls} stalls of 5 ms" in stalls.line()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="steal is read from Linux's /proc/stat")
def test_steal_is_a_share_of_the_cpu_time_since_it_started():
    steal = machine.Steal()
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass
    percent = steal.percent()
    assert percent is not None and 0 <= percent <= 100
    assert machine.steal_line(percent) == f"steal: {percent:.1f} % of CPU time"
