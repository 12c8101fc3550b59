"""Lower bounds on a workload's makespan, from the generation times the simulator recorded.

Pure functions, no I/O. A bound says how soon the last image could possibly have been ready
if a client used the provider's limits perfectly and spent no time on anything but waiting
for generations; it ignores network round trips and downloads, so a ratio of exactly 1.0 is not
reachable, and a ratio close to it means the client wastes little.
"""

from __future__ import annotations

from collections.abc import Sequence


def slots_lower_bound(durations: Sequence[float], slots: int) -> float:
    """Makespan bound when at most `slots` generations may run at once (BFL's in-flight cap).

    No schedule beats the total work spread evenly over the slots, nor the longest generation.
    """
    if slots < 1:
        raise ValueError("slots must be at least 1")
    if not durations:
        return 0.0
    if any(d < 0 for d in durations):
        raise ValueError("durations must not be negative")
    return max(sum(durations) / slots, max(durations))


def rate_lower_bound(durations: Sequence[float], rate: float, burst: float) -> float:
    """Makespan bound when creates are limited to `rate` a second after a burst of `burst`.

    The k-th create (0-based) cannot be sent before max(0, (k - burst) / rate); the best a
    client can do is to give the earliest create slots to the longest generations, so the bound
    is max over k of that start plus the k-th longest duration. A sliding window of L requests
    per w seconds allows no more than this (burst L, rate L / w), so the bound holds for it too.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if burst < 0:
        raise ValueError("burst must not be negative")
    if any(d < 0 for d in durations):
        raise ValueError("durations must not be negative")
    ordered = sorted(durations, reverse=True)
    return max(
        (max(0.0, (k - burst) / rate) + d for k, d in enumerate(ordered)),
        default=0.0,
    )
