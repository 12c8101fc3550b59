"""When to ask a provider again: poll decisions as pure functions over learned timings.

A status query costs a request against the account's rate limit and tells nothing until the
image is ready, so polls should cluster where completions are. The runner learns each model's
generation time from the jobs it has finished (kept in the database, so restarts keep it):

- first poll at the 20th percentile of completion times (the fastest fifth is seen at once),
  or at the 5th when the model reports progress (one look then tells when to look again);
- later polls geometrically spaced (each GROWTH times the elapsed time of the previous one),
  so a result is noticed within a fixed fraction (about 7%) of its own generation time: that
  matters because a BFL slot counts as busy until the result is seen;
- BFL's `progress` (0..1), when present, extrapolates the completion time directly (a little
  late rather than early: an early look costs a request, a late one only a moment);
- what is learned is when each result became ready, not when it was seen: within the interval
  between the last look that found it unfinished and the look that found it ready, the median
  of the times already learned that fall in it, or its middle when too few do (learning the
  moment it was seen would feed each delay back into the next first look, which would creep
  later and later; the middle of the wide interval before a first look would drag it earlier);
- a small jitter keeps thousands of jobs from polling in lockstep;
- with nothing learned yet, a cautious default schedule (1 s, then x1.5, up to 10 s).

Nothing here does I/O or reads a clock: times come in as arguments.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

GROWTH = 1.15  # each later poll at elapsed x GROWTH: detection within ~15% of generation time
FIRST_QUANTILE = 0.2
PROGRESS_FIRST_QUANTILE = 0.05  # with progress, the first look also schedules the last one
MIN_GAP = 0.05  # seconds between two polls of one job, at the very least
MAX_GAP = 10.0  # ... and at the most
JITTER = 0.1
PROGRESS_JITTER = 0.02  # each job's extrapolated moment is its own: little jitter is needed
COLD_FIRST = 1.0
COLD_FACTOR = 1.5
MIN_SAMPLES = 5  # finished jobs before a model's timing is trusted
LATE_LOOK = 1.0  # seconds a look may come after its planned moment and still teach
WINDOW = 500  # most recent generation times kept per model


@dataclass
class Timing:
    """Recent generation times (submission to ready) of one model, sorted for quantiles."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    _sorted: list[float] = field(default_factory=list)
    reports_progress: bool = False  # the model's answers carry a usable `progress`

    @classmethod
    def of(cls, durations: Iterable[float]) -> Timing:
        timing = cls()
        for value in durations:
            timing.add(value)
        return timing

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            return
        if len(self.samples) == self.samples.maxlen:
            old = self.samples[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self.samples.append(seconds)
        bisect.insort(self._sorted, seconds)

    @property
    def known(self) -> bool:
        return len(self._sorted) >= MIN_SAMPLES

    def median_within(self, low: float, high: float) -> float | None:
        """The median of the learned times in [low, high], or None when fewer than
        MIN_SAMPLES fall there."""
        data = self._sorted
        start, stop = bisect.bisect_left(data, low), bisect.bisect_right(data, high)
        if stop - start < MIN_SAMPLES:
            return None
        return data[(start + stop - 1) // 2]

    def quantile(self, q: float) -> float:
        data = self._sorted
        if not data:
            return 0.0
        pos = min(len(data) - 1, max(0, round(q * (len(data) - 1))))
        return data[pos]


def next_poll_delay(
    *,
    elapsed: float,
    polls: int,
    timing: Timing | None,
    progress: float | None,
    rng: random.Random,
    scale: float = 1.0,
) -> float:
    """Seconds from now until the next status query of a job submitted `elapsed` seconds ago.

    `polls` is how many queries this job has had; `timing` the model's learned generation
    times (or None); `progress` the provider's own estimate in 0..1 (or None).
    """
    if usable_progress(progress) and elapsed > 0:
        assert progress is not None
        # Linear extrapolation: the whole takes elapsed / progress.
        remaining = elapsed * (1.0 - progress) / progress
        return _clamp(remaining * rng.uniform(1.0, 1.0 + PROGRESS_JITTER))
    jitter = rng.uniform(1.0 - JITTER / 2, 1.0 + JITTER / 2)
    if timing is not None and timing.known:
        level = PROGRESS_FIRST_QUANTILE if timing.reports_progress else FIRST_QUANTILE
        first = timing.quantile(level)
        gap = first - elapsed if elapsed < first else elapsed * (GROWTH - 1.0)
        return _clamp(gap * jitter)
    # Nothing learned yet: a cautious default, shortened by the test suite's time scale.
    return min(MAX_GAP, COLD_FIRST * COLD_FACTOR**polls) * jitter * scale


def usable_progress(progress: float | None) -> bool:
    return progress is not None and 0.05 <= progress < 1.0


def generation_estimate(
    *,
    submitted: float,
    last_look: float,
    planned: float,
    seen: float,
    foretold: float | None = None,
    prior: Timing | None = None,
) -> float | None:
    """How long a result seen ready at `seen` took: it became ready after `last_look` (the
    create's answer, or the last query that found it unfinished) and by `seen`. What the
    provider's progress `foretold` at the last look, when it falls in that interval; else the
    median of the `prior` times learned in that interval, or its middle when too few are. A
    look `planned` for some moment but made much later than that (a restart, an overloaded
    worker) leaves too wide an interval to learn from: None."""
    if seen - max(planned, last_look) > max(LATE_LOOK, planned - last_look):
        return None
    low, high = max(last_look, submitted) - submitted, seen - submitted
    if foretold is not None and low <= foretold <= high:
        return foretold
    typical = None if prior is None else prior.median_within(low, high)
    if typical is not None:
        return typical
    return max(0.0, (low + high) / 2)


def _clamp(gap: float) -> float:
    return min(max(gap, MIN_GAP), MAX_GAP)
