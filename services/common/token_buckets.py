"""Token buckets by caller: how many calls one key may make, in bursts and on average.

Each key has a bucket of `burst` tokens that refills at `calls` tokens per `period_seconds`;
a call takes one token or is refused with the time until one is there. The arithmetic is in
integers (nanoseconds of a monotonic clock), so a bucket never drifts from rounding: its
credit is counted in token-nanoseconds-per-period, one token being `period_ns` of credit, and
`elapsed_ns * calls` of credit flows in over `elapsed_ns`.

Memory is bounded: at most `keys_max` buckets, least recently used evicted first. An evicted
bucket comes back full, which only ever favours its key, and callers reach a bucket only
after authenticating, so no one can mint keys to push others out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

NANOSECONDS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    """`calls` per `period_seconds` on average, at most `burst` at once after a quiet spell."""

    calls: int
    period_seconds: int
    burst: int

    def __post_init__(self) -> None:
        if self.calls < 1 or self.period_seconds < 1 or self.burst < 1:
            raise ValueError(f"a rate needs calls, period_seconds and burst >= 1, got {self}")

    @property
    def period_ns(self) -> int:
        return self.period_seconds * NANOSECONDS_PER_SECOND

    def describe(self) -> str:
        unit = {1: "second", 60: "minute", 3_600: "hour"}.get(self.period_seconds, f"{self.period_seconds} s")
        return f"{self.calls} calls per {unit} (bursts of {self.burst})"


class _Bucket:
    __slots__ = ("credit", "updated_ns")

    def __init__(self, credit: int, updated_ns: int) -> None:
        self.credit = credit
        self.updated_ns = updated_ns


class TokenBuckets:
    """One bucket per key, thread-safe. `clock` returns monotonic nanoseconds (injectable for tests)."""

    def __init__(self, rate: Rate, keys_max: int, clock: Callable[[], int] = time.monotonic_ns) -> None:
        if keys_max < 1:
            raise ValueError("keys_max must be >= 1")
        self.rate = rate
        self._keys_max = keys_max
        self._clock = clock
        self._capacity = rate.burst * rate.period_ns
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> int:
        """Take one token of `key`'s bucket: 0 when taken, else the nanoseconds until one is
        there (nothing is taken then, so a refused call costs its caller nothing more)."""
        cost = self.rate.period_ns
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self._capacity, now)
                while len(self._buckets) > self._keys_max:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                # max(): a clock that stood still (or a test's clock set back) refills nothing.
                elapsed_ns = max(0, now - bucket.updated_ns)
                bucket.credit = min(self._capacity, bucket.credit + elapsed_ns * self.rate.calls)
                bucket.updated_ns = max(now, bucket.updated_ns)
            if bucket.credit >= cost:
                bucket.credit -= cost
                return 0
            missing = cost - bucket.credit
            return -(-missing // self.rate.calls)  # rounded up: after this long a token is there

    def __len__(self) -> int:
        return len(self._buckets)
