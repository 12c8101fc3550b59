"""Backoff, poll schedule and the token bucket: pure functions with a fixed RNG and clock."""

from __future__ import annotations

import random

from runner.limits import TokenBucket
from runner.retry import RetryPolicy, backoff


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    policy = RetryPolicy(base=2.0, cap=60.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)]:
        waits = [backoff(attempt, policy, rng) for _ in range(500)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling  # full jitter spreads over the whole range
        assert min(waits) < 0.2 * ceiling


def test_backoff_scale_zero_means_no_wait() -> None:
    assert backoff(5, RetryPolicy(scale=0.0), random.Random(1)) == 0.0


def test_token_bucket_rate_burst_and_pause() -> None:
    bucket = TokenBucket(rate=1.0, capacity=5.0, tokens=5.0, updated=0.0, configured=1.0)
    assert bucket.available(0.0) == 5
    for _ in range(5):
        bucket.take(0.0)
    assert bucket.available(0.0) == 0
    assert bucket.next_token_at(0.0) == 1.0
    assert bucket.available(2.0) == 2
    bucket.pause(until=30.0)
    assert bucket.available(10.0) == 0
    assert bucket.next_token_at(10.0) == 30.0
    assert bucket.available(30.0) == 5  # refilled to capacity, never beyond


def test_aimd_halves_on_throttle_and_recovers_slowly_to_the_configured_rate() -> None:
    bucket = TokenBucket(rate=10.0, capacity=50.0, tokens=50.0, updated=0.0, configured=10.0)
    bucket.throttled(now=0.0, retry_after=2.0)
    assert bucket.rate == 5.0 and bucket.available(1.0) == 0 and bucket.paused_until == 2.0
    for _ in range(10):
        bucket.throttled(now=0.0, retry_after=None)
    assert bucket.rate == 0.5  # never below 5% of the configured rate
    for _ in range(1000):
        bucket.accepted()
    assert bucket.rate == 10.0  # and never above it


def test_share_follows_priority_without_starving_anyone() -> None:
    from runner.limits import Share

    share = Share({"high": 3.0, "low": 1.0})
    got = {"high": 0, "low": 0}
    for _ in range(100):  # one free slot per tick: the worst case for starvation
        for name, n in share.allocate(1, {"high": 10, "low": 10}).items():
            got[name] += n
    assert got == {"high": 75, "low": 25}
    # Room limits a campaign's share; the rest goes to the others.
    assert Share({"a": 1.0, "b": 1.0}).allocate(5, {"a": 1, "b": 10}) == {"a": 1, "b": 4}
    assert Share({"a": 1.0}).allocate(3, {"a": 0}) == {}


def test_no_sliding_minute_ever_sees_more_than_the_limit() -> None:
    """Take every token as soon as it exists for 5 minutes; count creates per 60 s window."""
    bucket = TokenBucket.per_minute(200, now=0.0)
    times: list[float] = []
    now = 0.0
    while now < 300.0:
        while bucket.available(now) >= 1:
            bucket.take(now)
            times.append(now)
        now = max(now + 0.001, bucket.next_token_at(now))
    worst = max(sum(1 for t in times if start <= t < start + 60.0) for start in times)
    assert worst <= 200
    assert len(times) >= 200 * 5 * 0.9  # and the rate stays close to the limit
