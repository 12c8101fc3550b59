"""Waiting decisions as pure functions: retry backoff and the poll schedule.

Backoff is exponential with full jitter (a uniformly random wait between zero and the capped
exponential), which spreads retries of many jobs that failed together. Randomness comes from a
`random.Random` the caller passes, so tests fix it. `RUNNER_TIME_SCALE` (a float, default 1)
multiplies every wait: the test suite sets it below 1 instead of patching sleep.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass


def time_scale() -> float:
    try:
        return max(0.0, float(os.environ.get("RUNNER_TIME_SCALE", "1")))
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # creates
    max_download_attempts: int = 6
    base: float = 2.0  # seconds
    cap: float = 300.0  # seconds
    scale: float = 1.0


def backoff(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff for the `attempt`-th retry (1-based)."""
    ceiling = min(policy.cap, policy.base * 2 ** max(0, attempt - 1))
    return rng.uniform(0.0, ceiling) * policy.scale


# Poll schedule: the first poll comes soon (fast models finish in seconds), later ones spread out.
POLL_FIRST = 1.0
POLL_FACTOR = 1.5
POLL_CAP = 10.0
POLL_JITTER = 0.2


def next_poll_delay(polls_so_far: int, rng: random.Random, scale: float | None = None) -> float:
    """Seconds until the next status query, after `polls_so_far` queries of this job."""
    base = min(POLL_CAP, POLL_FIRST * POLL_FACTOR**polls_so_far)
    jitter = rng.uniform(1.0 - POLL_JITTER, 1.0 + POLL_JITTER)
    return base * jitter * (time_scale() if scale is None else scale)
