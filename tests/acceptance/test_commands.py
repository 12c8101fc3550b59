"""submit, work, status and retry as separate commands on one database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import SimProcess, run_cli, write_jobfile


def status(tmp_path: Path) -> dict[str, dict[str, object]]:
    result = run_cli("status", "--json", "--db", str(tmp_path / "runner.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["campaigns"]


def test_submit_then_work_until_empty(tmp_path: Path, simulator: SimProcess) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, [f"owl {i}" for i in range(6)])
    submitted = run_cli("submit", str(jobfile), cwd=tmp_path)
    assert submitted.returncode == 0 and "6 new job(s)" in submitted.stdout
    (queued,) = status(tmp_path).values()
    assert queued["total"] == 6 and queued["states"] == {"queued": 6} and queued["done"] == 0
    assert simulator.stats()["creates"] == 0  # submit sends nothing

    worked = run_cli(
        "work", "--until-empty", "--simulator-url", simulator.url, cwd=tmp_path, timeout=60
    )
    assert worked.returncode == 0, worked.stderr
    done = status(tmp_path)["accept"]
    assert done["states"] == {"done": 6} and done["eta_seconds"] == 0
    assert done["rate_per_minute"] == pytest.approx(12.0, rel=0.3)  # 6 in the first 30 s
    text = run_cli("status", "accept", cwd=tmp_path)
    first, second = text.stdout.splitlines()
    assert first == "accept: 6/6 done (done 6)"
    assert second == f"  cost {done['cost']:.2f}" and done["cost"] > 0  # BFL reports credits


@pytest.mark.sim_config({"duration_median": 0.2, "faults": {"create": {"fail_rate": 1.0}}})
def test_failed_jobs_exit_1_and_retry_requeues_them(tmp_path: Path, simulator: SimProcess) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, ["a", "b", "c"])
    first = run_cli("run", str(jobfile), cwd=tmp_path)
    assert first.returncode == 1
    assert status(tmp_path)["accept"]["states"] == {"failed": 3}

    simulator.configure(faults={"create": {"fail_rate": 0.0}})
    retried = run_cli("retry", "accept", cwd=tmp_path)
    assert retried.returncode == 0 and "3 job(s) queued again" in retried.stdout
    second = run_cli("run", str(jobfile), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert status(tmp_path)["accept"]["states"] == {"done": 3}
    assert simulator.stats()["creates"] == 6  # the user asked: each input created twice


def test_retry_refuses_unfinished_states_and_unknown_campaigns(tmp_path: Path) -> None:
    (tmp_path / "j.yaml").write_text("campaign: c\nprovider: bfl\nmodel: flux-dev\nprompts: [a]\n")
    assert run_cli("submit", "j.yaml", cwd=tmp_path).returncode == 0
    bad_state = run_cli("retry", "c", "--state", "running", cwd=tmp_path)
    assert bad_state.returncode == 2 and "cannot be retried" in bad_state.stderr
    unknown = run_cli("retry", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no campaign named 'nope'" in unknown.stderr
    uncertain = run_cli("retry", "c", "--state", "uncertain", cwd=tmp_path)
    assert uncertain.returncode == 2 and "--uncertain" in uncertain.stderr


def test_retry_uncertain_alone_moves_only_the_uncertain_jobs(tmp_path: Path) -> None:
    """`runner retry CAMPAIGN --uncertain`, the command an uncertain job's error gives, pays
    again for those jobs only: expired ones were paid for already, failed ones are the
    user's other decision."""
    import sqlite3

    (tmp_path / "j.yaml").write_text(
        "campaign: c\nprovider: bfl\nmodel: flux-dev\nprompts: [a, b, c, d]\n"
    )
    assert run_cli("submit", "j.yaml", cwd=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "runner.db") as conn:
        for idx, state in ((1, "failed"), (2, "expired"), (3, "uncertain"), (4, "done")):
            conn.execute("UPDATE jobs SET state = ?, error = 'x' WHERE idx = ?", (state, idx))

    def states() -> dict[int, str]:
        with sqlite3.connect(tmp_path / "runner.db") as conn:
            return dict(conn.execute("SELECT idx, state FROM jobs"))

    moved = run_cli("retry", "c", "--uncertain", cwd=tmp_path)
    assert moved.returncode == 0 and "1 job(s) queued again" in moved.stdout, moved.stderr
    assert states() == {1: "failed", 2: "expired", 3: "queued", 4: "done"}
    # without --uncertain: the default states, failed and expired
    assert "2 job(s) queued again" in run_cli("retry", "c", cwd=tmp_path).stdout
    assert states() == {1: "queued", 2: "queued", 3: "queued", 4: "done"}
