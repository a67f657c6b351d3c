"""Token buckets by key (services/common/token_buckets.py) with a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.token_buckets import Rate, TokenBuckets

NS = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def test_a_full_bucket_admits_its_burst_then_says_exactly_when_the_next_token_is_there():
    clock = Clock()
    buckets = TokenBuckets(Rate(calls=3, period_seconds=1, burst=4), keys_max=10, clock=clock)
    assert [buckets.take("k") for _ in range(4)] == [0, 0, 0, 0]
    assert buckets.take("k") == NS // 3 + 1  # 333,333,333.3 ns, rounded up
    clock.now_ns += NS // 3
    assert buckets.take("k") == 1
    clock.now_ns += 1
    assert buckets.take("k") == 0


def test_a_quiet_spell_refills_up_to_the_burst_and_no_further():
    clock = Clock()
    buckets = TokenBuckets(Rate(calls=1, period_seconds=60, burst=2), keys_max=10, clock=clock)
    assert [buckets.take("k") for _ in range(2)] == [0, 0]
    clock.now_ns += 10 * 60 * NS
    assert [buckets.take("k") for _ in range(2)] == [0, 0]
    assert buckets.take("k") == 60 * NS


def test_keys_have_their_own_buckets_and_memory_is_bounded():
    clock = Clock()
    buckets = TokenBuckets(Rate(calls=1, period_seconds=1, burst=1), keys_max=2, clock=clock)
    assert buckets.take("a") == 0
    assert buckets.take("b") == 0
    assert buckets.take("a") > 0
    buckets.take("c")  # evicts b, the least recently used
    assert len(buckets) == 2
    assert buckets.take("b") == 0  # an evicted key comes back with a full bucket
    assert buckets.take("a") == 0  # a was evicted in turn by b


def test_a_clock_that_goes_back_refills_nothing():
    clock = Clock()
    clock.now_ns = 5 * NS
    buckets = TokenBuckets(Rate(calls=1, period_seconds=1, burst=1), keys_max=10, clock=clock)
    assert buckets.take("k") == 0
    clock.now_ns = 0
    assert buckets.take("k") == NS
    clock.now_ns = 5 * NS + NS - 1
    assert buckets.take("k") == 1


@pytest.mark.parametrize("calls, period_seconds, burst", [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_a_rate_must_allow_something(calls, period_seconds, burst):
    with pytest.raises(ValueError):
        Rate(calls, period_seconds, burst)


@settings(max_examples=200, deadline=None)
@given(
    calls=st.integers(1, 1_000),
    period_seconds=st.sampled_from([1, 60]),
    burst=st.integers(1, 50),
    steps_ns=st.lists(st.integers(0, 3 * NS), min_size=1, max_size=200),
)
def test_admitted_calls_never_exceed_burst_plus_rate_and_the_delay_is_exact(calls, period_seconds, burst, steps_ns):
    """Over any run, a key gets at most burst + calls * elapsed / period; a refused caller that
    waits exactly the delay it was given is admitted, and one nanosecond less is not enough."""
    clock = Clock()
    rate = Rate(calls, period_seconds, burst)
    buckets = TokenBuckets(rate, keys_max=1, clock=clock)
    admitted = 0
    for step_ns in steps_ns:
        clock.now_ns += step_ns
        delay_ns = buckets.take("k")
        if delay_ns == 0:
            admitted += 1
            continue
        if delay_ns > 1:
            clock.now_ns += delay_ns - 1
            assert buckets.take("k") == 1
            clock.now_ns += 1
        else:
            clock.now_ns += delay_ns
        assert buckets.take("k") == 0
        admitted += 1
    # In integers: admitted * period_ns <= burst * period_ns + elapsed_ns * calls.
    assert admitted * rate.period_ns <= burst * rate.period_ns + clock.now_ns * calls
