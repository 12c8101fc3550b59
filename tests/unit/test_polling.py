"""Poll scheduling: first look at the median, then geometric spacing; progress extrapolated."""

from __future__ import annotations

import random

import pytest

from runner.polling import FIRST_QUANTILE, GROWTH, MAX_GAP, MIN_GAP, Timing, next_poll_delay


def timing(*values: float) -> Timing:
    return Timing.of(values)


def delay(
    elapsed: float, polls: int = 0, t: Timing | None = None, progress: float | None = None
) -> float:
    return next_poll_delay(
        elapsed=elapsed, polls=polls, timing=t, progress=progress, rng=random.Random(1)
    )


LEARNED = timing(*[4.0 + 0.1 * i for i in range(21)])  # 4.0 .. 6.0 s
FIRST = LEARNED.quantile(FIRST_QUANTILE)  # 4.4 s


def test_first_poll_comes_early_in_the_learned_completion_times() -> None:
    assert abs(FIRST - 4.4) < 1e-9
    assert delay(0.0, t=LEARNED) == pytest.approx(FIRST, rel=0.06)
    assert delay(3.0, t=LEARNED) == pytest.approx(FIRST - 3.0, rel=0.06)


def test_after_that_polls_are_geometric() -> None:
    assert delay(5.0, polls=1, t=LEARNED) == pytest.approx(5.0 * (GROWTH - 1), rel=0.11)
    assert delay(20.0, polls=5, t=LEARNED) == pytest.approx(20.0 * (GROWTH - 1), rel=0.11)
    assert delay(1000.0, polls=9, t=LEARNED) == MAX_GAP


def test_progress_is_extrapolated_never_early() -> None:
    # 40% after 2 s: 3 s to go, and rather a little later than earlier.
    assert 3.0 <= delay(2.0, progress=0.4, t=LEARNED) <= 3.0 * 1.05


def test_cold_start_uses_the_default_schedule_until_enough_is_learned() -> None:
    few = timing(1.0, 1.0)
    assert not few.known
    assert delay(0.0, polls=0, t=few) == pytest.approx(1.0, rel=0.11)
    assert delay(5.0, polls=3, t=few) == pytest.approx(1.5**3, rel=0.11)


def test_gaps_are_bounded() -> None:
    tiny = timing(*[0.001] * 10)
    assert delay(0.0, t=tiny) >= MIN_GAP
    assert delay(0.0, progress=0.06, t=None) <= MAX_GAP


def test_timing_keeps_a_sliding_window() -> None:
    t = Timing()
    for value in range(1000):
        t.add(float(value))
    assert len(t.samples) == 500
    assert t.quantile(0.0) == 500.0 and t.quantile(1.0) == 999.0
    t.add(float("nan"))
    t.add(-1.0)
    assert len(t.samples) == 500


def test_fewer_polls_than_a_fixed_half_second_loop_for_the_same_detection() -> None:
    """Over lognormal generation times (median 4 s), the schedule needs at most half the
    queries of polling every 0.5 s, and notices a result within a fifth of its generation time
    (the fastest fifth: by the first look)."""
    rng = random.Random(5)
    durations = [4.0 * rng.lognormvariate(0, 0.4) for _ in range(2000)]
    learned = Timing.of(durations[:500])
    ours, fixed = 0, 0
    for d in durations[500:]:
        elapsed, polls = 0.0, 0
        while True:
            elapsed += next_poll_delay(
                elapsed=elapsed, polls=polls, timing=learned, progress=None, rng=rng
            )
            polls += 1
            if elapsed >= d:
                break
        first = learned.quantile(FIRST_QUANTILE) * 1.05
        assert elapsed - d <= max(0.2 * d, first - d) + MIN_GAP
        ours += polls
        fixed += int(d / 0.5) + 1
    assert ours <= fixed / 2
