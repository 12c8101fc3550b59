"""The benchmark harness stays runnable: a tiny run end to end, and its lower-bound arithmetic.

No timing is asserted: the figures depend on the machine. What must hold is that the one
command finishes, every contender finishes every job, and every figure is a number.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bounds import rate_lower_bound, slots_lower_bound
from benchmarks.figures import TABLE_FIGURES, duplicate_creates, percentile

ROOT = Path(__file__).resolve().parents[2]


def test_slots_bound_is_the_work_spread_over_the_slots() -> None:
    assert slots_lower_bound([1.0] * 48, 24) == pytest.approx(2.0)


def test_slots_bound_is_at_least_the_longest_generation() -> None:
    assert slots_lower_bound([10.0, 1.0, 1.0], 24) == 10.0


def test_slots_bound_of_nothing_is_zero() -> None:
    assert slots_lower_bound([], 24) == 0.0


def test_slots_bound_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        slots_lower_bound([1.0], 0)
    with pytest.raises(ValueError):
        slots_lower_bound([-1.0], 2)


def test_rate_bound_within_the_burst_is_the_longest_generation() -> None:
    assert rate_lower_bound([3.0, 1.0, 2.0], rate=1.0, burst=10) == 3.0


def test_rate_bound_beyond_the_burst_waits_for_tokens() -> None:
    # 10 creates at 2 a second after a burst of 4: the last one leaves at (9 - 4) / 2 = 2.5 s
    assert rate_lower_bound([1.0] * 10, rate=2.0, burst=4) == pytest.approx(3.5)


def test_rate_bound_gives_the_early_slots_to_the_long_generations() -> None:
    # sorted longest first: starts 0, 0, 1 (rate 1, burst 1) -> max(5 + 0, 1 + 0, 1 + 1)
    assert rate_lower_bound([1.0, 5.0, 1.0], rate=1.0, burst=1) == 5.0
    assert rate_lower_bound([1.0, 1.0, 1.0], rate=1.0, burst=0) == pytest.approx(3.0)


def test_rate_bound_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        rate_lower_bound([1.0], rate=0.0, burst=1)
    with pytest.raises(ValueError):
        rate_lower_bound([1.0], rate=1.0, burst=-1)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    assert percentile([7.0], 95) == 7.0


def test_duplicates_count_every_create_beyond_the_first() -> None:
    assert duplicate_creates({"a": 1, "b": 3, "c": 2}) == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_run_produces_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["problems"] == []
    assert set(results["workloads"]) == {"bfl-like", "replicate-like"}
    for entry in results["workloads"].values():
        contenders = entry["contenders"]
        assert set(contenders) == {"runner", entry["workload"]["contender"]}
        for figures in contenders.values():
            assert figures["done"] == figures["jobs"] == entry["workload"]["jobs"]
            for key in (*TABLE_FIGURES, "makespan_s", "lower_bound_s"):
                value = figures[key]
                assert isinstance(value, int | float) and math.isfinite(value), key
    scale = results["scale"]
    for value in (
        scale["enqueue"]["seconds"],
        scale["status"]["seconds"],
        scale["worker_rss"]["peak_rss_mb"],
        scale["end_to_end"]["jobs_per_second"],
        scale["claim_round"]["due_by_state_ms"],
        scale["claim_round"]["claim_24_submits_ms"],
    ):
        assert isinstance(value, int | float) and math.isfinite(value)
    assert scale["enqueue"]["enqueued"] == scale["enqueue"]["jobs"]
    assert scale["end_to_end"]["done"] == scale["end_to_end"]["jobs"]
    meta = results["meta"]
    assert meta["cpu_count"] >= 1 and meta["python"] and meta["date"]
    markdown = (tmp_path / "results.md").read_text()
    assert "## BFL-like" in markdown and "## Replicate-like" in markdown
    assert "| this runner |" in markdown and "## Scale" in markdown
    assert "makespan / LB" in markdown
    assert "a round of claims with" in markdown
