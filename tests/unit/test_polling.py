"""Poll scheduling: first look at the median, then geometric spacing; progress extrapolated."""

from __future__ import annotations

import random

import pytest

from runner.polling import (
    FIRST_QUANTILE,
    GROWTH,
    MAX_GAP,
    MIN_GAP,
    PROGRESS_FIRST_QUANTILE,
    Timing,
    generation_estimate,
    next_poll_delay,
)


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


def test_with_progress_reported_the_first_look_comes_earlier() -> None:
    reporting = Timing.of(LEARNED.samples)
    reporting.reports_progress = True
    early = reporting.quantile(PROGRESS_FIRST_QUANTILE)
    assert early < FIRST
    assert delay(0.0, t=reporting) == pytest.approx(early, rel=0.06)


def test_generation_estimate_is_the_middle_of_the_last_interval() -> None:
    assert generation_estimate(submitted=100.0, last_look=104.0, planned=106.0, seen=106.1) == (
        pytest.approx(5.05)
    )
    # seen at the first look: somewhere between the create and that look
    assert generation_estimate(submitted=100.0, last_look=100.0, planned=103.0, seen=103.0) == 1.5
    # what the progress foretold at the last look, when the looks agree with it
    foretold = {"submitted": 100.0, "last_look": 101.0, "planned": 105.0, "seen": 105.1}
    assert generation_estimate(**foretold, foretold=4.9) == 4.9
    assert generation_estimate(**foretold, foretold=9.0) == pytest.approx(3.05)  # disagrees
    # a look made long after it was planned says too little
    assert generation_estimate(submitted=100.0, last_look=104.0, planned=106.0, seen=200.0) is None


def test_generation_estimate_within_a_wide_interval_is_what_is_typical_there() -> None:
    """Seen at the first look, a result became ready anywhere since the create: the times
    already learned in that interval say where it most likely did (the middle would be far
    too early for a model whose fastest results take most of the interval)."""
    prior = Timing.of([2.0, 2.2, 2.4, 2.6, 2.8, 3.5, 9.0])
    first_look = {"submitted": 100.0, "last_look": 100.0, "planned": 103.0, "seen": 103.0}
    assert generation_estimate(**first_look, prior=prior) == 2.4
    assert generation_estimate(**first_look) == 1.5
    # too few learned times in the interval: its middle
    assert generation_estimate(**first_look, prior=Timing.of([2.0, 2.5, 4, 5, 6, 9.0])) == 1.5
    # progress foretold still comes first
    assert generation_estimate(**first_look, foretold=2.9, prior=prior) == 2.9


def _learn_while_polling(progress: bool, n: int = 3000) -> tuple[float, float, float]:
    """Poll n lognormal jobs (median 1 s) learning from the schedule's own looks, as the worker
    does; return the last first-look moment, the true 20th percentile, mean polls per job."""
    rng = random.Random(11)
    learned = Timing()
    durations, polls_total, first = [], 0, 0.0
    for _ in range(n):
        d = rng.lognormvariate(0, 0.4)
        durations.append(d)
        elapsed, last_look, polls, seen_progress = 0.0, 0.0, 0, None
        while True:
            gap = next_poll_delay(
                elapsed=elapsed, polls=polls, timing=learned, progress=seen_progress, rng=rng
            )
            if polls == 0:
                first = gap
            elapsed += gap
            polls += 1
            if elapsed >= d:
                break
            last_look = elapsed
            seen_progress = elapsed / d if progress else None
        if progress:
            learned.reports_progress = True
        estimate = generation_estimate(
            submitted=0.0, last_look=last_look, planned=elapsed, seen=elapsed, prior=learned
        )
        assert estimate is not None
        learned.add(estimate)
        polls_total += polls
    durations.sort()
    return first, durations[int(0.2 * n)], polls_total / n


@pytest.mark.parametrize("progress", [False, True])
def test_learning_from_its_own_looks_does_not_creep_later(progress: bool) -> None:
    """Learning the moment a result was seen feeds each detection delay into the next first
    look, which then drifts later and later; the interval's middle keeps it where it belongs."""
    first, true_q20, polls = _learn_while_polling(progress)
    level = PROGRESS_FIRST_QUANTILE if progress else FIRST_QUANTILE
    assert first < true_q20 * 1.1
    assert first > true_q20 * (0.6 if progress else 0.85), level
    assert polls < (2.5 if progress else 5.0)
