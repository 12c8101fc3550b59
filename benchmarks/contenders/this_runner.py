"""Contender: this runner, driven only through its CLI (`runner run JOBFILE --simulator-url`).

The harness cannot add code inside runner, so the per-job times come from runner's own database:
`submitted_at` (the create is about to be sent), `ready_at` (the answer saying the prediction
succeeded was handled) and `finished_at` (every file is on disk), all epoch seconds. The job's
`remote_id` is the simulator's prediction id. CPU and peak RSS come from reaping the `runner`
process with wait4, like every other contender.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from benchmarks.procs import PYTHON, Measured, clean_env, run_measured
from benchmarks.workloads import Workload

CAMPAIGN = "bench"


def write_jobfile(workload: Workload, folder: Path, prompts: list[str]) -> Path:
    """A job file for the workload; its prompts go in a .txt file beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    limits = {
        k: (int(v) if float(v).is_integer() else v) for k, v in workload.runner_limits.items()
    }
    # YAML flow mappings are JSON, so json.dumps writes valid YAML values
    text = "\n".join(
        [
            f"campaign: {CAMPAIGN}",
            f"provider: {json.dumps({'preset': workload.preset})}",
            f"model: {json.dumps(workload.model)}",
            f"input: {json.dumps(workload.input)}",
            "prompts_file: prompts.txt",
            "output: {dir: out}",
            f"limits: {json.dumps(limits)}",
            "",
        ]
    )
    path = folder / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def read_jobs(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT idx, state, remote_id, submitted_at, ready_at, finished_at, error "
            "FROM jobs WHERE campaign = ? ORDER BY idx",
            (CAMPAIGN,),
        ).fetchall()
    return [dict(row) for row in rows]


def run(
    workload: Workload, folder: Path, sim_url: str, prompts: list[str]
) -> tuple[dict[str, Any], Measured]:
    """Run the campaign to its end; returns the contender report and the process's usage."""
    jobfile = write_jobfile(workload, folder, prompts)
    db = folder / "runner.db"
    measured = run_measured(
        [PYTHON, "-m", "runner", "run", str(jobfile), "--simulator-url", sim_url, "--db", str(db)],
        log=folder / "runner.log",
        timeout=workload.time_limit(),
        env=clean_env(RUNNER_TIME_SCALE=repr(workload.time_scale)),
    )
    rows = read_jobs(db)
    submitted = [r["submitted_at"] for r in rows if r["submitted_at"] is not None]
    report = {
        "contender": "runner",
        "started_at": min(submitted) if submitted else None,
        "http_429_seen": None,  # runner keeps no count of its own; the simulator's is used
        "jobs": [
            {
                "index": r["idx"] - 1,
                "remote_id": r["remote_id"],
                "detected_at": r["ready_at"],
                "on_disk_at": r["finished_at"] if r["state"] == "done" else None,
                "error": None if r["state"] == "done" else f"{r['state']}: {r['error']}",
            }
            for r in rows
        ],
    }
    return report, measured
