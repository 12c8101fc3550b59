"""Several worker processes on one database, against one simulator that counts every create.

PostgreSQL: four `runner work` processes share one campaign and its 24 provider slots; one of
three workers is killed with SIGKILL and the others finish its jobs. SQLite: two overlapping
`runner run` of the same job file (a cron run still going when the next starts) share the work.
Every input is created exactly once at the simulator, whatever the number of workers.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.store import open_store
from tests.acceptance.conftest import (
    KEY_ENV,
    SimProcess,
    run_cli,
    runner_env,
    start_cli,
    wait_for,
    write_jobfile,
)
from tests.reliability.zombie import sample, stale_writes

SUBMITTED = re.compile(r"this process: (\d+) submitted")


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def haunt(processes: list[subprocess.Popen[str]], db: str, campaign: str) -> list[str]:
    """While the workers run, keep making the writes of a worker that was paused past its
    leases (tests/reliability/zombie.py) on the jobs they hold; those the database accepted."""
    store = open_store(db, create=False)
    rng = random.Random(0)
    accepted: list[str] = []
    rounds = 0
    try:
        while any(p.poll() is None for p in processes):
            accepted += stale_writes(store, sample(store, campaign, rng, 8))
            rounds += 1
            time.sleep(0.1)
    finally:
        store.close()
    assert rounds >= 3, "the workers ended before a stale write was tried"
    return accepted


def finish(processes: list[subprocess.Popen[str]], timeout: float = 150) -> list[str]:
    outputs = []
    for process in processes:
        out, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, out[-3000:]
        outputs.append(out)
    return outputs


def submitted_by(outputs: list[str]) -> list[int]:
    counts = []
    for out in outputs:
        match = SUBMITTED.search(out)
        assert match, out[-2000:]
        counts.append(int(match.group(1)))
    return counts


def rows(db: str) -> list[dict[str, Any]]:
    url = db if "://" in db else f"sqlite:///{db}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.exec_driver_sql("SELECT * FROM jobs")]
    finally:
        engine.dispose()


def workers(db: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(db)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.exec_driver_sql("SELECT * FROM workers")]
    finally:
        engine.dispose()


def assert_each_input_created_once(simulator: SimProcess, job_rows: list[dict[str, Any]]) -> None:
    creates = simulator.stats()["creates_by_input"]
    assert len(creates) == len(job_rows)
    for row in job_rows:
        data = row["input"] if isinstance(row["input"], dict) else json.loads(row["input"])
        assert creates.get(canonical(data)) == 1, row["key"]


@pytest.mark.postgres
@pytest.mark.timeout(240)
@pytest.mark.sim_config(
    {"duration_median": 1.2, "duration_sigma": 0.3, "bfl_max_in_flight": 1000, "seed": 5}
)
def test_four_workers_on_postgresql_share_24_slots(
    tmp_path: Path, simulator: SimProcess, pg_url: str
) -> None:
    """The simulator would accept 1,000 at once; the runner's 24 hold across 4 processes."""
    n = 160
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"a lighthouse at dusk, take {i}" for i in range(n)],
        extra="limits: {max_in_flight: 24, creates_per_minute: 100000}\n",
    )
    assert run_cli("submit", str(jobfile), "--db", pg_url, cwd=tmp_path).returncode == 0
    procs = [start_cli("work", "--until-empty", "--db", pg_url, cwd=tmp_path) for _ in range(4)]
    # a paused worker waking up among them writes nothing over their work
    assert haunt(procs, pg_url, "accept") == []
    outputs = finish(procs)

    job_rows = rows(pg_url)
    assert len(job_rows) == n
    assert {r["state"] for r in job_rows} == {"done"}
    assert_each_input_created_once(simulator, job_rows)
    counts = submitted_by(outputs)
    assert sum(counts) == n
    assert sum(1 for c in counts if c > 0) >= 2, counts  # the work was really shared
    stats = simulator.stats()
    peak = stats["max_in_flight_seen"][runner_env()[KEY_ENV]]
    assert 16 <= peak <= 24, peak  # full, never over: 4 separate limits would reach 96
    assert stats["rate_limited"] == 0
    assert workers(pg_url) == []  # each worker removed its row on the way out


@pytest.mark.postgres
@pytest.mark.timeout(240)
@pytest.mark.sim_config(
    {
        "duration_median": 1.0,
        "duration_sigma": 0.3,
        "seed": 9,
        # Slow creates: a worker always holds some jobs mid-create, the riskiest moment.
        "faults": {"create": {"slow_rate": 1.0, "slow_seconds": 0.5}},
    }
)
def test_kill9_of_one_worker_its_jobs_finish_on_the_others(
    tmp_path: Path, simulator: SimProcess, pg_url: str
) -> None:
    n = 90
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"a fox in the snow, take {i}" for i in range(n)],
        style="replicate",
        extra="limits: {max_in_flight: 30, creates_per_minute: 100000}\n",
        provider_extra=", prefer_wait: null",  # polled, so jobs sit in `running` under a lease
    )
    assert run_cli("submit", str(jobfile), "--db", pg_url, cwd=tmp_path).returncode == 0
    victim = start_cli("work", "--until-empty", "--db", pg_url, cwd=tmp_path)
    others = [start_cli("work", "--until-empty", "--db", pg_url, cwd=tmp_path) for _ in range(2)]

    def held_by_victim() -> list[int]:
        return [
            r["id"]
            for r in rows(pg_url)
            if r["lease_owner"] and f":{victim.pid}:" in r["lease_owner"]
        ]

    wait_for(lambda: simulator.stats()["creates"] >= 20, 60, "the campaign to be under way")
    held: list[int] = []
    wait_for(lambda: bool(held.extend(held_by_victim()) or held), 60, "the victim to hold jobs")
    victim.kill()  # SIGKILL: its leases are left behind
    victim.wait(timeout=30)
    assert held, "the victim held nothing when it was killed"
    outputs = finish(others)

    job_rows = rows(pg_url)
    by_id = {r["id"]: r for r in job_rows}
    assert {r["state"] for r in job_rows} == {"done"}
    assert all(by_id[i]["state"] == "done" for i in held)
    assert_each_input_created_once(simulator, job_rows)
    assert all(c > 0 for c in submitted_by(outputs))
    assert not [w for w in workers(pg_url) if w["pid"] == victim.pid]  # forgotten as dead


@pytest.mark.timeout(240)
@pytest.mark.sim_config({"duration_median": 1.0, "duration_sigma": 0.3, "seed": 3})
def test_two_overlapping_runs_on_one_sqlite_file(tmp_path: Path, simulator: SimProcess) -> None:
    """The nightly cron run starts while last night's is still going: they share the work."""
    n = 100
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"a tram in the rain, take {i}" for i in range(n)],
        extra="limits: {max_in_flight: 12, creates_per_minute: 100000}\n",
    )
    first = start_cli("run", str(jobfile), cwd=tmp_path)
    wait_for(lambda: simulator.stats()["creates"] >= 5, 60, "the first run to submit")
    second = start_cli("run", str(jobfile), cwd=tmp_path)

    def status() -> dict[str, Any]:
        result = run_cli("status", "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    seen: dict[str, Any] = {}

    def both_in_status() -> bool:
        seen["json"], seen["text"] = status(), run_cli("status", cwd=tmp_path).stdout
        return len(seen["json"]["workers"]) == 2 and "workers: 2" in seen["text"]

    wait_for(both_in_status, 60, "both runs to show in status")
    assert {w["pid"] for w in seen["json"]["workers"]} == {first.pid, second.pid}
    assert f"pid {first.pid}: accept" in seen["text"]
    assert haunt([first, second], str(tmp_path / "runner.db"), "accept") == []
    outputs = finish([first, second])

    job_rows = rows(str(tmp_path / "runner.db"))
    assert len(job_rows) == n
    assert {r["state"] for r in job_rows} == {"done"}
    assert_each_input_created_once(simulator, job_rows)
    counts = submitted_by(outputs)
    assert sum(counts) == n and min(counts) > 0, counts
    assert "0 new job(s), 100 already known" in outputs[1]
    peak = simulator.stats()["max_in_flight_seen"][runner_env()[KEY_ENV]]
    assert peak <= 12, peak


@pytest.mark.timeout(120)
@pytest.mark.sim_config({"duration_median": 2.0, "duration_sigma": 0.1, "seed": 4})
def test_max_runtime_stops_cleanly_and_the_next_run_resumes(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"a kite over dunes, take {i}" for i in range(12)],
        extra="limits: {max_in_flight: 3, creates_per_minute: 100000}\n",
    )
    started = time.monotonic()
    first = run_cli("run", str(jobfile), "--max-runtime", "1.5s", cwd=tmp_path)
    took = time.monotonic() - started
    assert first.returncode == 3, first.stderr  # stopped early: run again to resume
    assert "max runtime reached" in first.stderr
    assert took < 15, took  # in time: it does not wait for the 12 jobs (about 8 s of work)
    job_rows = rows(str(tmp_path / "runner.db"))
    assert {r["state"] for r in job_rows} <= {"queued", "running", "done"}
    assert all(r["lease_owner"] is None for r in job_rows)  # nothing left held
    assert any(r["state"] != "done" for r in job_rows)

    second = run_cli("run", str(jobfile), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    job_rows = rows(str(tmp_path / "runner.db"))
    assert {r["state"] for r in job_rows} == {"done"}
    assert_each_input_created_once(simulator, job_rows)


def test_max_runtime_takes_a_duration(tmp_path: Path) -> None:
    result = run_cli("run", "jobs.yaml", "--max-runtime", "soon", cwd=tmp_path)
    assert result.returncode == 2
    assert "--max-runtime" in result.stderr and "duration" in result.stderr
    assert "Traceback" not in result.stderr
