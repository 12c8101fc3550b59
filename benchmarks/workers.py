"""Jobs per second through PostgreSQL with 1, 2 and 4 `runner work` processes.

Each count gets a schema of its own in the PostgreSQL database the URL names, the same
campaign (`runner submit`, not timed), and a simulator with no delays and no limits, so the
figure is what the claims, leases and state changes through PostgreSQL allow. Wall time runs
from starting the workers to the last one exiting (`--until-empty`).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.procs import PYTHON, ROOT, SimulatorProcess, clean_env
from benchmarks.scale import NO_DELAY_SIMULATOR, _jobfile, _prompt

WORKER_COUNTS = (1, 2, 4)


def _schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def one_count(workers: int, jobs: int, folder: Path, base_url: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    jobfile = _jobfile(
        folder,
        [_prompt(n) for n in range(jobs)],
        "limits: {max_in_flight: 256, creates_per_minute: 1000000}\n",
    )
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = _schema_url(base_url, schema)
    env = clean_env()
    try:
        subprocess.run(
            [PYTHON, "-m", "runner", "submit", str(jobfile), "--db", url],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        with SimulatorProcess(NO_DELAY_SIMULATOR, folder / "sim") as sim:
            started = time.monotonic()
            logs = [open(folder / f"worker-{n}.log", "w") for n in range(workers)]  # noqa: SIM115
            procs = [
                subprocess.Popen(
                    [
                        PYTHON,
                        "-m",
                        "runner",
                        "-q",
                        "work",
                        "--until-empty",
                        "--db",
                        url,
                        "--simulator-url",
                        sim.url,
                    ],
                    cwd=folder,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                for log in logs
            ]
            codes = [p.wait(timeout=120 + jobs * 0.5) for p in procs]
            wall = time.monotonic() - started
            for log in logs:
                log.close()
            creates = sim.stats()["creates"]
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            done = conn.exec_driver_sql("SELECT count(*) FROM jobs WHERE state = 'done'").scalar()
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
    return {
        "workers": workers,
        "jobs": jobs,
        "done": done,
        "creates": creates,
        "exit_codes": codes,
        "wall_seconds": wall,
        "jobs_per_second": (done or 0) / wall,
    }


def postgres_workers(jobs: int, folder: Path, base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return {"error": "no PostgreSQL: set RUNNER_BENCH_PG_URL (or RUNNER_TEST_PG_URL)"}
    return {str(n): one_count(n, jobs, folder / f"workers-{n}", base_url) for n in WORKER_COUNTS}
