"""What the machine did that no process of ours caused: stalls of an idle thread, and the CPU time
the hypervisor gave to other guests (steal). An open-loop row counts every stall against every
call it delays, so its p99 cannot be read without these.

    .venv/bin/python -m bench.machine 20     # 20 s of the stall probe alone
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

STALL_MS_MIN = 5.0  # a 1 ms sleep that overran by this much was a stall


@dataclass(frozen=True, slots=True)
class Stalls:
    seconds: float
    sleeps: int
    stalls: int  # sleeps that overran by STALL_MS_MIN or more
    longest_ms: float

    def line(self) -> str:
        return (
            f"{self.stalls} stall{'' if self.stalls == 1 else 's'} of {STALL_MS_MIN:g} ms or more"
            f" in {self.seconds:g} s of 1 ms sleeps"
            f" ({self.sleeps:,} sleeps), the longest {self.longest_ms:.1f} ms"
        )


def idle_stalls(seconds: float) -> Stalls:
    """Sleep 1 ms again and again and count how often waking up came late: on an idle machine,
    time the whole guest was not running (or a core was taken away)."""
    sleeps = stalls = 0
    longest = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        before = time.perf_counter()
        time.sleep(0.001)
        overran_ms = (time.perf_counter() - before - 0.001) * 1000
        sleeps += 1
        longest = max(longest, overran_ms)
        stalls += overran_ms >= STALL_MS_MIN
    return Stalls(seconds, sleeps, stalls, max(longest, 0.0))


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) ticks of all cores since boot, or None where /proc/stat is not Linux's."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    ticks = [int(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


class Steal:
    """The share of CPU time the hypervisor took from this machine since `Steal()`."""

    def __init__(self) -> None:
        self._start = _cpu_ticks()

    def percent(self) -> float | None:
        now = _cpu_ticks()
        if self._start is None or now is None or now[1] <= self._start[1]:
            return None
        return 100 * (now[0] - self._start[0]) / (now[1] - self._start[1])


def steal_line(percent: float | None) -> str:
    return "steal: not measured (no /proc/stat)" if percent is None else f"steal: {percent:.1f} % of CPU time"


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    steal = Steal()
    print(idle_stalls(seconds).line())
    print(steal_line(steal.percent()))
