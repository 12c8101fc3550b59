"""The benchmark workloads: simulator profiles, limits, and what each contender is told.

Every workload is written in "real" provider terms and shrunk by one time scale (default 0.2):
generation times, rate-limit windows, URL lifetimes and every client-side wait (the contenders'
0.5 s poll interval, runner's poll schedule and backoffs through `RUNNER_TIME_SCALE`) are
multiplied by it, and rates are divided by it. The whole world runs five times faster, so the
ratios between generation time, poll interval and rate limit stay the ones users meet, while a
2,000-job workload takes about two minutes. Scaling only the generation times would make a
0.5 s poll interval look five times coarser than it is against a real provider. At 0.1 both
runner and the BFL loop were CPU-bound on a 2-core machine (the figures then measured the CPU,
not the scheduling), hence 0.2.

This module only describes workloads; running them is `benchmarks.run`'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_TIME_SCALE = 0.2
SEED = 20240611
# The simulator draws images of at most this many pixels a side, so drawing is never the
# bottleneck; the inputs still ask for 1024x1024 like a real campaign would.
MAX_SIDE = 64
# What BFL's documentation and replicate-python (REPLICATE_POLL_INTERVAL) poll at, real seconds.
USER_POLL_INTERVAL = 0.5

Style = Literal["bfl", "replicate"]
BoundKind = Literal["slots", "rate"]


@dataclass(frozen=True)
class Workload:
    """One workload: the simulator's config, runner's job file, and the other contender's knobs."""

    name: str
    title: str
    style: Style
    jobs: int
    time_scale: float
    sim_config: dict[str, Any]
    preset: str  # runner's provider preset
    model: str
    input: dict[str, Any]  # sent with every prompt, by every contender
    runner_limits: dict[str, float]  # the job file's `limits`
    contender: str  # the module in benchmarks.contenders the user-code contender runs
    concurrency: int  # that contender's semaphore
    poll_interval: float  # that contender's poll interval, in simulator seconds
    bound: BoundKind
    slots: int = 0  # bound == "slots"
    rate: float = 0.0  # bound == "rate": creates a second after the burst
    burst: float = 0.0
    notes: list[str] = field(default_factory=list)

    def prompts(self) -> list[str]:
        """The same prompts, in the same order, for every contender."""
        return [
            f"benchmark image {i:06d}: a lighthouse at dusk, study {i % 97}"
            for i in range(self.jobs)
        ]

    def expected_seconds(self) -> float:
        """A rough makespan estimate, only to size time limits."""
        sim = self.sim_config
        mean = sim["duration_median"] * math.exp(sim["duration_sigma"] ** 2 / 2)
        if self.bound == "slots":
            return self.jobs * mean / self.slots + mean
        return max(0.0, self.jobs - self.burst) / self.rate + mean

    def time_limit(self) -> float:
        """How long a contender may take before it is stopped and reported as not finished."""
        return 90.0 + 6.0 * self.expected_seconds()


def _common_sim(scale: float) -> dict[str, Any]:
    return {
        "seed": SEED,
        "max_side": MAX_SIDE,
        "queue_delay": 0.0,
        # lifetimes are part of the world that shrinks: BFL's 10-minute signed URLs and so on
        "bfl_url_ttl": 600.0 * scale,
        "bfl_forget_after": 1800.0 * scale,
        "replicate_output_ttl": 3600.0 * scale,
        "rate_limit_window": 60.0 * scale,
    }


def bfl_like(jobs: int, scale: float = DEFAULT_TIME_SCALE) -> Workload:
    """BFL: at most 24 tasks in flight per account, lognormal generation times, no rate limit.

    Real terms: median 5.5 s (FLUX1.1 [pro] takes a few seconds), sigma 0.4 (the slowest of
    2,000 take about three times the median). runner gets the cap as `max_in_flight: 24` and its
    preset's 600 creates a minute; the BFL loop holds a semaphore of 24.
    """
    median, sigma = 5.5, 0.4
    sim = _common_sim(scale) | {
        "duration_median": median * scale,
        "duration_sigma": sigma,
        "bfl_max_in_flight": 24,
        "bfl_model_max_in_flight": {},
    }
    return Workload(
        name="bfl-like",
        title="BFL-like: 24 in flight, lognormal generation time",
        style="bfl",
        jobs=jobs,
        time_scale=scale,
        sim_config=sim,
        preset="bfl",
        model="flux-pro-1.1",
        input={"width": 1024, "height": 1024, "output_format": "png"},
        runner_limits={"max_in_flight": 24},
        contender="bfl_loop",
        concurrency=24,
        poll_interval=USER_POLL_INTERVAL * scale,
        bound="slots",
        slots=24,
        notes=[
            f"generation time lognormal, median {median} s, sigma {sigma} (real terms); "
            "BFL caps an account at 24 tasks in flight and answers 429 beyond",
            "contenders: runner (`provider: bfl`, `limits: {max_in_flight: 24}`) and BFL's "
            "documented loop (submit, poll `polling_url` every 0.5 s until Ready, download) "
            "under a semaphore of 24",
        ],
    )


def replicate_like(jobs: int, scale: float = DEFAULT_TIME_SCALE) -> Workload:
    """Replicate: a create-rate limit (sliding window), reads limited too, `Prefer: wait`.

    Real terms: 200 creates a minute (Replicate's default is 600; accounts low on credit get
    less, and a tighter limit is what makes the rate, not the generation time, the binding
    constraint this workload is about), 3,000 reads a minute, generation median 5 s, sigma 0.4.
    runner gets the limit as `creates_per_minute` with `create_burst` at the whole limit (the
    window slides, so a minute's creates may go at once) and `max_in_flight: 200`; the
    official client runs under a semaphore of 50, the round number a user picks for "enough to
    saturate 200 a minute" (a create and its generation take a few seconds, so ~20 would do).
    """
    median, sigma = 5.0, 0.4
    per_minute, reads_per_minute = 200, 3000
    window = 60.0 * scale
    sim = _common_sim(scale) | {
        "duration_median": median * scale,
        "duration_sigma": sigma,
        "replicate_create_limit": per_minute,
        "replicate_read_limit": reads_per_minute,
    }
    return Workload(
        name="replicate-like",
        title="Replicate-like: create-rate limit, `Prefer: wait` available",
        style="replicate",
        jobs=jobs,
        time_scale=scale,
        sim_config=sim,
        preset="replicate",
        model="black-forest-labs/flux-schnell",
        input={"output_format": "png"},
        runner_limits={
            "max_in_flight": 200,
            "creates_per_minute": per_minute,
            "create_burst": per_minute,
        },
        contender="replicate_client",
        concurrency=50,
        poll_interval=USER_POLL_INTERVAL * scale,
        bound="rate",
        rate=per_minute / window,
        burst=float(per_minute),
        notes=[
            f"{per_minute} creates and {reads_per_minute} reads per 60 s sliding window "
            f"(real terms); generation time lognormal, median {median} s, sigma {sigma}",
            "contenders: runner (`provider: replicate`, its preset sends `Prefer: wait=5`) and "
            "the official `replicate` client (asyncio, semaphore 50, `predictions.async_create` "
            "+ `async_wait` at REPLICATE_POLL_INTERVAL 0.5 s, httpx download)",
        ],
    )


def workloads(jobs: int, scale: float = DEFAULT_TIME_SCALE) -> list[Workload]:
    return [bfl_like(jobs, scale), replicate_like(jobs, scale)]
