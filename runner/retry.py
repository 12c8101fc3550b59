"""Retry waits as pure functions: exponential backoff with full jitter (polls: runner.polling).

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


def lease_seconds() -> float:
    """How long a job stays leased to a worker without a heartbeat (and so how long a worker
    unseen is still taken to be alive): scaled down with every wait in tests, never below 10 s."""
    return max(10.0, 60.0 * time_scale())


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


# A save that failed for this machine's own reason (a full disk) is tried again soon, so that
# results are saved moments after space returns, long before their URLs expire: each try costs
# a fetch of the file again, never money, and never one of the job's strikes.
LOCAL_RETRY_FIRST = 1.0  # seconds
LOCAL_RETRY_CAP = 8.0


def local_retry_wait(tries: int, scale: float) -> float:
    """The wait before the next try of a save that failed locally `tries` times in a row."""
    return min(LOCAL_RETRY_CAP, LOCAL_RETRY_FIRST * 2 ** max(0, tries - 1)) * scale
