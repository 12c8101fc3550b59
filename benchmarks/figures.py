"""Turning one contender's run into figures: the contender's report, the simulator's record of
every generation (`/_sim/stats`) and the process's own resource usage, against the workload's
lower bound.

Pure functions apart from nothing: the caller fetches the stats and runs the processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from benchmarks.bounds import rate_lower_bound, slots_lower_bound
from benchmarks.procs import Measured
from benchmarks.workloads import Workload

# the figures the markdown table shows, in order, and what every run must produce
TABLE_FIGURES = (
    "makespan_over_lb",
    "status_requests_per_job",
    "http_429",
    "duplicate_creates",
    "ready_to_detected_p50_s",
    "ready_to_detected_p95_s",
    "ready_to_disk_p50_s",
    "ready_to_disk_p95_s",
    "cpu_seconds_per_job",
    "peak_rss_mb",
)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between closest ranks."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def lower_bound(workload: Workload, durations: Sequence[float]) -> float:
    if workload.bound == "slots":
        return slots_lower_bound(durations, workload.slots)
    return rate_lower_bound(durations, workload.rate, workload.burst)


def duplicate_creates(creates_by_input: dict[str, int]) -> int:
    """Creates beyond the first of the same input: each would be paid for twice."""
    return sum(count - 1 for count in creates_by_input.values() if count > 1)


def contender_figures(
    workload: Workload, report: dict[str, Any], stats: dict[str, Any], measured: Measured
) -> dict[str, Any]:
    """Every figure for one contender on one workload (None where it cannot be computed)."""
    generations = {g["id"]: g for g in stats["generations"]}
    records = report["jobs"]
    done = [r for r in records if r.get("on_disk_at") is not None]
    detected: list[float] = []
    on_disk: list[float] = []
    unmatched = 0
    for record in done:
        generation = generations.get(record.get("remote_id"))
        if generation is None or record.get("detected_at") is None:
            unmatched += 1
            continue
        ready = generation["completed_at"]
        detected.append(record["detected_at"] - ready)
        on_disk.append(record["on_disk_at"] - ready)
    # every generation the simulator ran in this run; with no duplicates, one per job, and the
    # same seeded durations for every contender
    durations = [g["duration"] for g in stats["generations"]]
    bound = lower_bound(workload, durations) if durations else None
    started = report.get("started_at")
    makespan = (
        max(r["on_disk_at"] for r in done) - started if done and started is not None else None
    )
    jobs = workload.jobs

    def pct(values: list[float], q: float) -> float | None:
        return percentile(values, q) if values else None

    errors = sorted({r["error"] for r in records if r.get("error")})
    return {
        "jobs": jobs,
        "done": len(done),
        "not_done": jobs - len(done),
        "errors": errors[:5],
        "unmatched_records": unmatched,
        "makespan_s": makespan,
        "lower_bound_s": bound,
        "makespan_over_lb": makespan / bound if makespan is not None and bound else None,
        "creates": stats["creates"],
        "inputs_created": len(stats["creates_by_input"]),
        "duplicate_creates": duplicate_creates(stats["creates_by_input"]),
        "status_requests": stats["polls"],
        "status_requests_per_job": stats["polls"] / jobs,
        "downloads": stats["downloads"],
        "http_429": stats["rate_limited"],
        "http_429_seen_by_client": report.get("http_429_seen"),
        "status_codes": stats["status_codes"],
        "max_in_flight_seen": max(stats["max_in_flight_seen"].values(), default=0),
        "ready_to_detected_p50_s": pct(detected, 50),
        "ready_to_detected_p95_s": pct(detected, 95),
        "ready_to_disk_p50_s": pct(on_disk, 50),
        "ready_to_disk_p95_s": pct(on_disk, 95),
        "cpu_seconds": measured.cpu_seconds,
        "cpu_seconds_per_job": measured.cpu_seconds / jobs,
        "peak_rss_mb": measured.peak_rss_kib / 1024,
        "process": measured.to_dict(),
        "client_self_report": {
            k: report[k] for k in ("self_cpu_seconds", "self_peak_rss_kib") if k in report
        },
    }
