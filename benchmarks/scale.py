"""Scale figures for this runner alone, through its CLI: how long enqueueing takes, how long
`runner status` takes on a big database, how much memory a worker needs with a big queue, and
how many jobs a second it finishes when the provider adds no delay and no limit.

The big database is built directly in SQLite (not timed): one job is enqueued by runner's own
`open_store(...).enqueue(...)`, and the other rows are copies of it with their own key, prompt
and input fingerprint, so they are the rows runner would have written. Everything else is timed
as subprocess wall time, which includes starting Python and importing runner, as a user sees it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.procs import PYTHON, SimulatorProcess, run_measured

CAMPAIGN = "scale"
MODEL = "black-forest-labs/flux-schnell"
BUILD_CHUNK = 50_000


def _jobfile(folder: Path, prompts: list[str] | None, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if prompts is not None:
        (folder / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    path = folder / "jobs.yaml"
    path.write_text(
        f"campaign: {CAMPAIGN}\nprovider: {{preset: replicate}}\nmodel: {MODEL}\n"
        "input: {output_format: png}\nprompts_file: prompts.txt\noutput: {dir: out}\n" + extra,
        encoding="utf-8",
    )
    return path


def _prompt(n: int) -> str:
    return f"scale prompt {n:07d}: a harbour in fog"


def enqueue_seconds(jobs: int, folder: Path) -> dict[str, Any]:
    """`runner submit` of a job file whose prompts file has `jobs` lines."""
    jobfile = _jobfile(folder, [_prompt(n) for n in range(jobs)])
    db = folder / "enqueue.db"
    measured = run_measured(
        [PYTHON, "-m", "runner", "submit", str(jobfile), "--db", str(db)],
        log=folder / "submit.log",
        timeout=900,
    )
    return {
        "jobs": jobs,
        "enqueued": _count(db),
        "seconds": measured.wall_seconds,
        "process": measured.to_dict(),
    }


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def build_database(jobs: int, folder: Path) -> Path:
    """A database holding one campaign of `jobs` queued jobs (not timed)."""
    from runner import load_jobfile, open_store
    from runner.campaign import canonical_json, input_fingerprint

    jobfile = _jobfile(folder, [_prompt(0)])
    db = folder / "big.db"
    store = open_store(str(db))
    try:
        store.enqueue(load_jobfile(str(jobfile)))
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(db, timeout=30, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        template = dict(conn.execute("SELECT * FROM jobs").fetchone())
        provider, model = template["provider"], template["model"]
        base_input = json.loads(template["input"])
        base_meta = json.loads(template["meta"])

        def fingerprint(inputs: dict[str, Any]) -> str:
            # input_fingerprint without its walk for input images, which these inputs lack;
            # checked against the real one below, and the real one is used if they differ
            text = canonical_json({"provider": provider, "model": model, "input": inputs})
            return hashlib.sha256(text.encode()).hexdigest()

        probe = [dict(base_input, prompt=_prompt(n)) for n in (0, 1, jobs - 1)]
        exact = all(fingerprint(p) == input_fingerprint(provider, model, p) for p in probe)
        hash_of = fingerprint if exact else lambda p: input_fingerprint(provider, model, p)
        if hash_of(base_input) != template["input_hash"]:
            raise RuntimeError("runner's input fingerprint changed: update benchmarks/scale.py")

        columns = [c for c in template if c != "id"]

        def rows() -> Iterator[tuple[Any, ...]]:
            for n in range(1, jobs):
                inputs = dict(base_input, prompt=_prompt(n))
                key = f"scale-{n:07d}"
                meta = dict(base_meta, prompt=inputs["prompt"], id=key, slug=f"scale-{n:07d}")
                values = dict(
                    template,
                    key=key,
                    idx=n + 1,
                    input=json.dumps(inputs),
                    meta=json.dumps(meta),
                    input_hash=hash_of(inputs),
                )
                yield tuple(values[c] for c in columns)

        # indexes are dropped and made again afterwards (much faster than keeping them up to
        # date row by row); the schema ends up exactly as migrated
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' "
            "AND sql IS NOT NULL"
        ).fetchall()
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN IMMEDIATE")
        for index in indexes:
            conn.execute(f'DROP INDEX "{index["name"]}"')
        statement = (
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        conn.executemany(statement, rows())
        for index in indexes:
            conn.execute(index["sql"])
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    return db


def status_seconds(db: Path, folder: Path) -> dict[str, Any]:
    """`runner status --db FILE` on the big database (one warm-up run first, then timed)."""
    args = [PYTHON, "-m", "runner", "status", "--db", str(db)]
    run_measured(args, log=folder / "status-warmup.log", timeout=300)
    measured = run_measured(args, log=folder / "status.log", timeout=300)
    return {
        "seconds": measured.wall_seconds,
        "output": (folder / "status.log").read_text(errors="replace").strip()[-300:],
        "process": measured.to_dict(),
    }


def worker_rss(db: Path, folder: Path, hold_seconds: float) -> dict[str, Any]:
    """Peak RSS of `runner work --until-empty` holding the big queue it cannot progress on.

    The simulator allows one create an hour (a sliding window of 3,600 s), so after its first
    create every create is answered 429 with a retry_after of about an hour: the worker keeps
    the whole queue in front of it without finishing it. After `hold_seconds` it gets SIGINT
    (its graceful stop), and its peak RSS is read from wait4.
    """
    config = {
        "seed": 1,
        "max_side": 16,
        "duration_median": 0.05,
        "duration_sigma": 0.0,
        "replicate_create_limit": 1,
        "replicate_read_limit": None,
        "rate_limit_window": 3600.0,
    }
    with SimulatorProcess(config, folder / "sim-rss") as sim:
        measured = run_measured(
            [
                PYTHON,
                "-m",
                "runner",
                "work",
                "--db",
                str(db),
                "--until-empty",
                "--simulator-url",
                sim.url,
            ],
            log=folder / "work.log",
            timeout=hold_seconds + 60,
            interrupt_after=hold_seconds,
        )
        stats = sim.stats()
    return {
        "peak_rss_mb": measured.peak_rss_kib / 1024,
        "held_seconds": hold_seconds,
        "creates": stats["creates"],
        "http_429": stats["rate_limited"],
        "process": measured.to_dict(),
    }


def claim_round(db: Path, repeats: int = 20) -> dict[str, Any]:
    """What the worker asks the database at each round of claims, on the big database (after
    the other figures that use it): when each state falls due, then a claim of 24 jobs to
    submit with its count of the provider slots held. Timed in this process, median of
    `repeats`; the claims lease jobs that nothing works on afterwards."""
    from runner.store import open_store
    from runner.worker.pool import CLAIMABLE

    store = open_store(str(db))

    def median_ms(call: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    try:
        due_ms = median_ms(lambda: store.due_by_state([CAMPAIGN], CLAIMABLE, time.time()))
        claim_ms = median_ms(
            lambda: store.claim_submits(
                [CAMPAIGN],
                owner="benchmark",
                now=time.time(),
                lease_seconds=60.0,
                plan=lambda held: {CAMPAIGN: 24},
                lock="benchmark",
            )
        )
    finally:
        store.close()
    return {"due_by_state_ms": due_ms, "claim_24_submits_ms": claim_ms, "repeats": repeats}


NO_DELAY_SIMULATOR = {
    "seed": 1,
    "max_side": 16,
    "queue_delay": 0.0,
    "duration_median": 0.0,
    "duration_sigma": 0.0,
    "bfl_max_in_flight": 1_000_000,
    "bfl_model_max_in_flight": {},
    "replicate_create_limit": None,
    "replicate_read_limit": None,
}


def end_to_end(jobs: int, folder: Path) -> dict[str, Any]:
    """`runner run` of `jobs` jobs against a simulator with no delays and no limits."""
    config = NO_DELAY_SIMULATOR
    jobfile = _jobfile(
        folder,
        [_prompt(n) for n in range(jobs)],
        "limits: {max_in_flight: 256, creates_per_minute: 1000000}\n",
    )
    db = folder / "e2e.db"
    with SimulatorProcess(config, folder / "sim-e2e") as sim:
        measured = run_measured(
            [
                PYTHON,
                "-m",
                "runner",
                "run",
                str(jobfile),
                "--simulator-url",
                sim.url,
                "--db",
                str(db),
            ],
            log=folder / "e2e.log",
            timeout=120 + jobs * 0.5,
        )
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        done, first, last = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'done'), min(submitted_at), max(finished_at) "
            "FROM jobs"
        ).fetchone()
    busy = (last - first) if first is not None and last is not None else None
    return {
        "jobs": jobs,
        "done": done,
        "wall_seconds": measured.wall_seconds,
        "jobs_per_second": done / measured.wall_seconds if measured.wall_seconds else None,
        "jobs_per_second_first_create_to_last_file": done / busy if busy else None,
        # start-up (imports, enqueue) and finish: the part of the wall time that is not per job
        "start_and_finish_seconds": measured.wall_seconds - busy if busy else None,
        "cpu_seconds_per_job": measured.cpu_seconds / jobs,
        "process": measured.to_dict(),
    }


def scale_figures(
    folder: Path, *, enqueue_jobs: int, big_jobs: int, e2e_jobs: int, hold_seconds: float
) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    figures["enqueue"] = enqueue_seconds(enqueue_jobs, folder / "enqueue")
    started = time.monotonic()
    db = build_database(big_jobs, folder / "big")
    figures["big_database"] = {
        "jobs": _count(db),
        "build_seconds_not_a_figure": time.monotonic() - started,
    }
    figures["status"] = status_seconds(db, folder / "big")
    figures["worker_rss"] = worker_rss(db, folder / "big", hold_seconds)
    figures["claim_round"] = claim_round(db)
    figures["end_to_end"] = end_to_end(e2e_jobs, folder / "e2e")
    return figures
