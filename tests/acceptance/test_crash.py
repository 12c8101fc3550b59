"""kill -9 of the runner during creates, polls and downloads, then the same command again.

Afterwards: every job is done, except creates interrupted mid-call, which are `uncertain` and
reported (they may have been billed, so they are never resent without the user's say); no input
was created twice at the simulator; no partial file is left; every file is what was served.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import (
    SimProcess,
    db_rows,
    run_cli,
    start_cli,
    wait_for,
    write_jobfile,
)

N_JOBS = 40
SLOW = {
    "duration_median": 0.8,
    "duration_sigma": 0.3,
    "faults": {
        "create": {"slow_rate": 1.0, "slow_seconds": 0.25},
        "download": {"slow_rate": 1.0, "slow_seconds": 0.4},
    },
}


def job_rows(db: Path) -> list[dict[str, Any]]:
    return [dict(r) for r in db_rows(db)]


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@pytest.mark.timeout(300)
@pytest.mark.sim_config(SLOW)
@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_kill9_during_creates_polls_and_downloads(
    tmp_path: Path, simulator: SimProcess, style: str
) -> None:
    """BFL cannot list its tasks: interrupted creates end `uncertain`. Replicate can: the
    runner finds each interrupted create at the provider, so every job ends `done`."""
    prompts = [f"a paper lantern, variation {i}" for i in range(N_JOBS)]
    # No Prefer: wait, so that Replicate-style jobs are polled (a phase to kill in).
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        prompts,
        style=style,
        extra="limits: {max_in_flight: 8}\n",
        provider_extra=", prefer_wait: null" if style == "replicate" else "",
    )
    db = tmp_path / "runner.db"

    def stat(name: str) -> int:
        return int(simulator.stats()[name])

    def db_count(state: str) -> int:
        return sum(1 for r in job_rows(db) if r["state"] == state)

    kill_points = [
        ("creates", lambda base: stat("creates") >= base["creates"] + 3),
        ("polls", lambda base: stat("polls") >= base["polls"] + 4 and db_count("running") > 0),
        ("downloads", lambda base: stat("downloads") >= base["downloads"] + 2),
        ("creates", lambda base: stat("creates") >= base["creates"] + 3),
        ("downloads", lambda base: stat("downloads") >= base["downloads"] + 3),
    ]
    kills: list[str] = []
    for phase, reached in kill_points:
        base = simulator.stats()
        proc = start_cli("run", str(jobfile), cwd=tmp_path)

        def ready(proc: Any = proc, reached: Any = reached, base: Any = base) -> bool:
            return bool(reached(base)) or proc.poll() is not None

        wait_for(ready, 60, f"{phase} to start")
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup of any kind runs
            kills.append(phase)
            proc.wait(timeout=30)
        else:
            assert proc.stdout is not None
            kills.append(f"{phase}: exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
    assert kills == [phase for phase, _ in kill_points], kills

    final = run_cli("run", str(jobfile), cwd=tmp_path, timeout=120)
    rows = job_rows(db)
    states = {r["state"] for r in rows}
    assert len(rows) == N_JOBS
    assert states <= {"done", "uncertain"}, states
    uncertain = [r for r in rows if r["state"] == "uncertain"]
    if style == "replicate":
        assert not uncertain, "a Replicate-style create was not reconciled"
    assert final.returncode == (1 if uncertain else 0), final.stderr
    if uncertain:
        assert "uncertain" in final.stderr and "retry" in final.stderr

    stats = simulator.stats()
    # No input was ever created twice: nothing paid for twice.
    assert max(stats["creates_by_input"].values()) == 1
    for row in rows:
        count = stats["creates_by_input"].get(canonical(json.loads(row["input"])), 0)
        assert count == 1 if row["state"] == "done" else count <= 1

    print(f"kills: {kills}; done {len(rows) - len(uncertain)}, uncertain {len(uncertain)}")
    out = tmp_path / "out"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "partial files left"
    served = set(stats["files"].values())
    done = [r for r in rows if r["state"] == "done"]
    assert len([p for p in out.iterdir() if p.suffix != ".json"]) == len(done)
    for row in done:
        (record,) = json.loads(row["files"])
        data = Path(record["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        assert record["sha256"] in served
