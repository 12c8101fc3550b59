"""500 jobs, 20 SIGKILLs of the runner at random moments, the provider's clock five minutes
off, one create answer in eight lost, unseeded variants of three; then every crash promise
checked, for both query styles.

The harness is `tests/reliability/chaos.py` (also a script). Its seed is printed first; replay
a failure with `RUNNER_CHAOS_SEED=<seed>`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.chaos import run_chaos, summary

JOBS = 500
KILLS = 20


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_twenty_times_loses_nothing_and_pays_nothing_twice(tmp_path: Path) -> None:
    figures = run_chaos(tmp_path / "chaos", jobs=JOBS, kills=KILLS, style="replicate")
    print(f"\n{summary(figures)}")
    assert not figures["problems"], figures["problems"]
    assert figures["kills"] >= KILLS
    jobs = figures["jobs"]  # more than JOBS if the harness had to add work for its kills
    assert jobs >= JOBS
    # Replicate style reconciles every interrupted create: nothing is left to the user,
    # nothing is paid twice, nothing paid for is left behind.
    assert figures["done"] == jobs and figures["uncertain"] == 0
    assert figures["duplicates"] == 0 and figures["orphans"] == 0
    assert figures["creates"] == jobs
    assert figures["files_checked"] == jobs
    assert figures["integrity"] == "ok"
    assert figures["lost_answers"] > jobs // 16  # the lost answers did happen
    # the kills did land mid-call, not only between calls
    assert (
        figures["interrupted"].get("submitting", 0) + figures["interrupted"].get("downloading", 0)
        > 0
    ), figures["interrupted"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bfl_style_under_kills_pays_twice_for_nothing_and_leaves_only_uncertain_jobs(
    tmp_path: Path,
) -> None:
    """BFL cannot list tasks: a lost create is `uncertain`, never resent; the only predictions
    no job holds are those of uncertain jobs, one each at most."""
    figures = run_chaos(tmp_path / "chaos", jobs=JOBS, kills=KILLS, style="bfl")
    print(f"\n{summary(figures)}")
    assert not figures["problems"], figures["problems"]
    assert figures["kills"] >= KILLS
    jobs = figures["jobs"]
    assert figures["duplicates"] == 0
    assert figures["uncertain"] > 0 and figures["orphans"] <= figures["uncertain"]
    assert figures["done"] + figures["uncertain"] == jobs
    assert figures["files_checked"] == figures["done"]
    assert figures["integrity"] == "ok"
