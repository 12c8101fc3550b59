"""Ctrl-C and SIGTERM: stop cleanly, leave the database consistent, resume without paying twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import (
    SimProcess,
    db_rows,
    run_cli,
    start_cli,
    wait_for,
    write_jobfile,
)

N = 24


def rows(db: Path) -> list[tuple[str, str | None]]:
    return [(r["state"], r["lease_owner"]) for r in db_rows(db)]


def assert_consistent(db: Path) -> None:
    found = rows(db)
    assert len(found) == N
    assert all(owner is None for _, owner in found), "a lease outlived its process"
    assert not [s for s, _ in found if s == "submitting"], "a create left in limbo"


@pytest.mark.sim_config(
    {"duration_median": 1.0, "faults": {"create": {"slow_rate": 1.0, "slow_seconds": 0.3}}}
)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_one_signal_finishes_what_is_in_hand_then_resumes(
    tmp_path: Path, simulator: SimProcess, signum: int
) -> None:
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"moth {i}" for i in range(N)],
        extra="limits: {max_in_flight: 6}\n",
    )
    proc = start_cli("run", str(jobfile), cwd=tmp_path)
    wait_for(lambda: simulator.stats()["creates"] >= 3, 30, "creates")
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, output
    assert_consistent(tmp_path / "runner.db")
    # Creates in hand were allowed to finish: nothing is uncertain.
    assert not [s for s, _ in rows(tmp_path / "runner.db") if s == "uncertain"]

    again = run_cli("run", str(jobfile), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert {s for s, _ in rows(tmp_path / "runner.db")} == {"done"}
    stats = simulator.stats()
    assert stats["creates"] == N and set(stats["creates_by_input"].values()) == {1}


@pytest.mark.sim_config(
    {"duration_median": 1.0, "faults": {"create": {"slow_rate": 1.0, "slow_seconds": 5.0}}}
)
def test_second_ctrl_c_stops_at_once_and_stays_consistent(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"moth {i}" for i in range(N)],
        extra="limits: {max_in_flight: 6}\n",
    )
    proc = start_cli("run", str(jobfile), cwd=tmp_path)
    db = tmp_path / "runner.db"
    wait_for(
        lambda: db.exists() and any(s == "submitting" for s, _ in rows(db)),
        30,
        "a create in flight",
    )
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert time.monotonic() - started < 4.0  # did not wait for the 5 s creates
    assert proc.returncode == 3, output
    assert "Traceback" not in output
    assert_consistent(tmp_path / "runner.db")
    # The interrupted creates may have been billed: to be looked up, never simply queued.
    states = [s for s, _ in rows(tmp_path / "runner.db")]
    assert states.count("reconciling") >= 1
    assert set(states) <= {"queued", "reconciling"}
