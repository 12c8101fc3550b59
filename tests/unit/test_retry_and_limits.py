"""Backoff, poll schedule and the create rate: pure functions with a fixed RNG and clock."""

from __future__ import annotations

import bisect
import random

import pytest

from runner.limits import CreateRate
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


def test_create_rate_paces_bursts_and_pauses() -> None:
    rate = CreateRate(limit=60, window=60, burst=5, allowed=60, tokens=5)  # 1/s, 5 at once
    assert rate.available(0.0) == 5
    send(rate, 0.0, 5)
    assert rate.available(0.0) == 0
    assert rate.next_token_at(0.0) == 1.0
    assert rate.available(2.0) == 2
    rate.pause(until=30.0)
    assert rate.available(10.0) == 0
    assert rate.next_token_at(10.0) == 30.0
    assert rate.available(30.0) == 5  # refilled to the burst, never beyond


def send(rate: CreateRate, now: float, n: int) -> None:
    rate.take(now, n)
    for _ in range(n):
        rate.sending(now)


def test_a_claim_counts_at_once_and_the_window_holds_when_it_was_sent() -> None:
    """A create claimed at 0 but sent at 5 leaves the window at 65, not 60; a claim that is
    never sent frees its place (not its token)."""
    rate = CreateRate(limit=3, window=60, burst=3, allowed=3, tokens=3)
    rate.take(0.0, 3)
    assert rate.available(0.0) == 0  # claimed, not sent: counted already
    rate.sending(0.0)
    rate.sending(5.0)
    rate.unclaimed()
    assert rate.available(1.0) == 0  # one free place, but no token before 20 s
    assert rate.available(20.0) == 1
    send(rate, 20.0, 1)
    assert rate.next_token_at(21.0) == 60.0
    assert rate.available(60.0) == 1 and rate.available(64.0) == 1 and rate.available(65.0) == 2


def test_aimd_halves_on_throttle_and_recovers_slowly_to_the_configured_limit() -> None:
    rate = CreateRate(limit=600, window=60, burst=50, allowed=600, tokens=50)
    rate.throttled(now=0.0, retry_after=2.0)
    assert rate.rate == 5.0 and rate.available(1.0) == 0 and rate.paused_until == 2.0
    for _ in range(10):
        rate.throttled(now=0.0, retry_after=None)
    assert rate.rate == 0.5  # never below 5% of the configured rate
    for _ in range(1000):
        rate.accepted()
    assert rate.rate == 10.0  # and never above it


def test_a_full_burst_waits_for_the_window_to_slide() -> None:
    """With the whole minute allowed at once, the 201st create waits for the first to age
    out."""
    rate = CreateRate(limit=200, window=60, burst=200, allowed=200, tokens=200)
    assert rate.available(0.0) == 200
    send(rate, 0.0, 150)
    send(rate, 10.0, 50)
    assert rate.available(59.0) == 0
    assert rate.next_token_at(59.0) == 60.0
    assert rate.available(60.0) == 150  # the first 150 left the window together


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


def _greedy(rate: CreateRate, seconds: float) -> list[float]:
    """Take every create the moment it is allowed; return the moments."""
    times: list[float] = []
    now = 0.0
    while now < seconds:
        n = rate.available(now)
        rate.take(now, n)
        for _ in range(n):
            rate.sending(now)
        times.extend([now] * n)
        now = max(now + 0.001, rate.next_token_at(now))
    return times


def _worst_window(times: list[float], window: float) -> int:
    return max(bisect.bisect_left(times, start + window) - i for i, start in enumerate(times))


@pytest.mark.parametrize("burst", [None, 1.0, 40.0, 200.0])
@pytest.mark.parametrize("minute", [60.0, 12.0])
def test_no_sliding_minute_ever_sees_more_than_the_limit(
    burst: float | None, minute: float
) -> None:
    """Greedy for 5 minutes: no window of one minute holds more than the limit, and the steady
    rate is the whole limit (the burst is not paid for by a lower rate) but for the margin."""
    rate = CreateRate.per_minute(200, now=0.0, burst=burst, minute=minute)
    times = _greedy(rate, 5 * minute)
    assert _worst_window(times, minute) <= 200
    assert len(times) >= 200 * 5 * 0.96
