"""Chaos: SIGKILL the runner at random moments of a large campaign, restart it each time, then
check every promise it makes about a crash, against a provider that behaves like the real ones:
its clock five minutes off ours, one create answer in eight lost after the prediction was made
(cut off halfway, the connection reset, a 502), BFL answering `Task not found` for a second
after some creates, and unseeded variants that send one input three times.

The simulator runs in a process of its own, so its counters (creates per input, the sha256 of
every file served) survive the runner being killed. The runner is the real CLI,
`python -m runner run jobs.yaml`, with a provider preset whose base URL points at the
simulator. After the kills the same command runs to the end, and then:

- every job is settled (done, or uncertain/failed/... as reported, each with its reason);
- nothing was paid twice: no input was created at the simulator more often than jobs have it,
  and no two jobs hold one prediction;
- nothing paid for was walked away from: every prediction the simulator made is held by a job
  (Replicate style, which reconciles every lost create), or, BFL style (no list), is one of an
  uncertain job's, at most one per uncertain job of that input;
- every file recorded in the database is on disk with the recorded sha256, which is the
  sha256 of what the simulator served for that URL; no other file, and no temporary or
  partial file, is in the output folder;
- SQLite's `PRAGMA integrity_check` answers `ok`;
- after each kill, the writes the killed worker would make had it only been paused, and those
  of a worker that does not hold the jobs, are all refused by the database
  (`tests/reliability/zombie.py`).

The kill delays come from a seeded RNG; the seed is printed first so a failure can be
replayed: `RUNNER_CHAOS_SEED=N` or `--seed N`.

    python -m tests.reliability.chaos --jobs 500 --kills 20 --seed 1234
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from runner.simulator.state import canonical_json
from runner.store import open_store
from tests.reliability.zombie import sample, stale_writes

SEED_ENV = "RUNNER_CHAOS_SEED"
KEY_ENV = "RUNNER_CHAOS_KEY"
TIME_SCALE = "0.05"
QUEUE_LINE = "new job(s)"  # what `runner run` prints once its queue is in the database
SETTLED = {"done", "failed", "canceled", "moderated", "expired", "uncertain"}

VARIANTS = 3  # unseeded: one input sent three times
# Short generations, and a little latency on creates and downloads so that kills also land
# while those calls are in the air. One create answer in eight is lost after the prediction
# was made, and the provider's clock is five minutes behind ours.
SIM_CONFIG: dict[str, Any] = {
    "duration_median": 0.3,
    "duration_sigma": 0.4,
    "max_side": 32,
    "replicate_create_limit": None,
    "replicate_read_limit": None,
    "clock_offset": -300.0,
    # BFL answers `Task not found` for a while after some creates
    "bfl_not_found_after_create": 1.0,
    "bfl_not_found_rate": 0.3,
    "faults": {
        "create": {
            "slow_rate": 0.3,
            "slow_seconds": 0.1,
            "drop_after_create_rate": 0.05,
            "reset_after_create_rate": 0.04,
            "error_after_create_rate": 0.035,
            "error_status": 502,
        },
        "download": {"slow_rate": 0.3, "slow_seconds": 0.1},
    },
}


@dataclass
class Simulator:
    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/_sim/stats", timeout=30)
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()
        return stats


@contextlib.contextmanager
def simulator(folder: Path, config: dict[str, Any]) -> Iterator[Simulator]:
    """`runner simulate` in a process of its own, stopped when the block ends."""
    path = folder / "sim.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "simulate", "--port", "0", "--config", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until it listens, or until it died
        if "listening on" not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        yield Simulator(url=line.rsplit(" ", 1)[-1].strip(), process=process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(
        {KEY_ENV: "chaos-test-key", "RUNNER_TIME_SCALE": TIME_SCALE, "PYTHONUNBUFFERED": "1"}
    )
    return env


def add_prompts(folder: Path, start: int, jobs: int) -> int:
    """Append prompts for at least `jobs` jobs to the campaign's file (the next run enqueues
    only those); the number of prompts the file then has."""
    count = -(-jobs // VARIANTS)
    with (folder / "prompts.txt").open("a", encoding="utf-8") as fh:
        fh.writelines(f"chaos lantern number {i}\n" for i in range(start, start + count))
    return start + count


def write_campaign(
    folder: Path, sim_url: str, jobs: int, style: str, max_in_flight: int, per_minute: float
) -> tuple[Path, int]:
    """The job file, and how many prompts it has."""
    (folder / "prompts.txt").write_text("", encoding="utf-8")
    prompts = add_prompts(folder, 0, jobs)
    if style == "bfl":
        provider = f"{{preset: bfl, base_url: '{sim_url}', api_key_env: {KEY_ENV}}}"
        model, inputs = "flux-pro-1.1", "{width: 256, height: 256, output_format: png}"
    else:
        # the preset as users get it: creates ask the API to wait (Prefer: wait=5)
        provider = f"{{preset: replicate, base_url: '{sim_url}', api_key_env: {KEY_ENV}}}"
        model, inputs = "black-forest-labs/flux-schnell", "{output_format: png}"
    path = folder / "jobs.yaml"
    path.write_text(
        f"campaign: chaos\nprovider: {provider}\nmodel: {model}\ninput: {inputs}\n"
        f"prompts_file: prompts.txt\nvariants: {VARIANTS}\noutput: {{dir: out}}\n"
        f"limits: {{max_in_flight: {max_in_flight}, creates_per_minute: {per_minute}}}\n",
        encoding="utf-8",
    )
    return path, prompts


def _start_runner(jobfile: Path, log: TextIO) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(jobfile)],
        cwd=jobfile.parent,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until_working(process: subprocess.Popen[str], log: Path, seen: int) -> float:
    """Wait until this run has printed its queue (imports and enqueueing done); return when."""
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up and process.poll() is None:
        if log.read_text(encoding="utf-8", errors="replace").count(QUEUE_LINE) > seen:
            break
        time.sleep(0.02)
    return time.monotonic()


def _in_hand(db: Path) -> dict[str, int]:
    """Jobs a killed runner held (leased) when it died, by state."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            found = conn.execute(
                "SELECT state, count(*) FROM jobs WHERE lease_owner IS NOT NULL GROUP BY state"
            ).fetchall()
        except sqlite3.OperationalError:  # killed before the tables were made
            return {}
    return {str(state): int(n) for state, n in found}


def _zombie_writes(db: Path, rng: random.Random) -> list[str]:
    """Right after a kill, with no runner running: the writes the killed worker, had it only
    been paused, and a worker not holding the jobs would make; those the database accepted."""
    if not _in_hand(db):
        return []
    store = open_store(str(db), create=False)
    try:
        return stale_writes(store, sample(store, "chaos", rng, 30))
    finally:
        store.close()


def _unsettled(db: Path) -> int | None:
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            states = conn.execute("SELECT state FROM jobs").fetchall()
        except sqlite3.OperationalError:
            return None
    return sum(1 for (state,) in states if state not in SETTLED)


def _rows(db: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM jobs")]


def _integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def resolve_seed(seed: int | None) -> int:
    if seed is not None:
        return seed
    from_env = os.environ.get(SEED_ENV, "").strip()
    if from_env:
        return int(from_env)
    return random.SystemRandom().randrange(1, 2**31)


def run_chaos(
    folder: Path,
    *,
    jobs: int = 500,
    kills: int = 20,
    seed: int | None = None,
    style: str = "replicate",
    delay: tuple[float, float] = (0.05, 1.2),
    max_in_flight: int = 48,
    per_minute: float = 90.0,  # a minute lasts 3 s at the time scale: 1,800 a real minute
    top_up: int = 50,
    final_timeout: float = 240.0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the campaign under `kills` SIGKILLs, finish it, check it; return the figures.

    `delay` is the range from which each kill's moment is drawn, in seconds after that run
    printed its queue (before that it is only importing Python). `max_in_flight` and
    `per_minute` pace the campaign. So that every kill finds work to interrupt however fast
    the machine is, `top_up` prompts are appended to the campaign whenever fewer than that
    many jobs are left before a restart: the campaign then has more than `jobs` jobs.
    Problems found are listed under `problems` (empty when every check passed).
    """
    if style == "bfl":
        max_in_flight = min(max_in_flight, 24)  # a BFL account runs at most 24 tasks at once
    seed = resolve_seed(seed)
    say(f"chaos seed {seed} (replay: {SEED_ENV}={seed} or --seed {seed})")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    delivered = 0
    early_exits: list[int] = []
    interrupted: Counter[str] = Counter()  # jobs a kill caught in hand, by state
    zombies: list[str] = []  # stale writes the database accepted (there must be none)
    config = {**SIM_CONFIG, "seed": seed}
    with simulator(folder, config) as sim:
        jobfile, prompts = write_campaign(folder, sim.url, jobs, style, max_in_flight, per_minute)
        log_path = folder / "runner.log"
        with log_path.open("w", encoding="utf-8") as log:
            for n in range(2 * kills):  # a run may end by itself before its kill
                if delivered >= kills:
                    break
                left = _unsettled(folder / "runner.db")
                if left is not None and left < top_up:
                    prompts = add_prompts(folder, prompts, top_up)
                wait = rng.uniform(*delay)
                seen = log_path.read_text(encoding="utf-8", errors="replace").count(QUEUE_LINE)
                process = _start_runner(jobfile, log)
                working = _wait_until_working(process, log_path, seen)
                try:
                    process.wait(timeout=max(0.0, working + wait - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()  # SIGKILL: nothing of the runner's cleanup runs
                    process.wait()
                    delivered += 1
                    interrupted.update(_in_hand(folder / "runner.db"))
                    zombies += _zombie_writes(folder / "runner.db", rng)
                    continue
                # finished before its kill: the next round adds prompts if too few are left
                early_exits.append(process.returncode)
                say(f"run {n + 1} ended by itself (exit {process.returncode}) before its kill")
            kill_phase = time.monotonic() - started
            final = _start_runner(jobfile, log)
            try:
                final_exit = final.wait(timeout=final_timeout)
            except subprocess.TimeoutExpired:
                final.kill()
                final.wait()
                final_exit = -1
        stats = sim.stats()
    figures = check(folder, stats, jobs=prompts * VARIANTS, style=style)
    figures["problems"] += zombies
    figures.update(
        seed=seed,
        style=style,
        kills=delivered,
        interrupted=dict(interrupted),
        early_exits=early_exits,
        final_exit=final_exit,
        kill_phase_seconds=round(kill_phase, 1),
        seconds=round(time.monotonic() - started, 1),
    )
    if final_exit not in (0, 1):
        figures["problems"].append(f"the final run exited {final_exit} (see runner.log)")
    if delivered < kills:
        figures["problems"].append(f"only {delivered} of {kills} kills landed before the end")
    return figures


def check(folder: Path, stats: dict[str, Any], *, jobs: int, style: str) -> dict[str, Any]:
    """Every promise about a crash, checked against the database, the disk and the simulator."""
    problems: list[str] = []
    db = folder / "runner.db"
    rows = _rows(db)
    states = Counter(r["state"] for r in rows)
    if len(rows) != jobs:
        problems.append(f"{len(rows)} jobs in the database, {jobs} expected")
    unsettled = {s: n for s, n in states.items() if s not in SETTLED}
    if unsettled:
        problems.append(f"jobs not settled: {unsettled}")
    for row in rows:
        if row["state"] != "done" and not row["error"]:
            problems.append(f"job {row['key']} is {row['state']} without a reason")

    # Money, judged by what the simulator made: per input, no more creates than jobs have it;
    # no prediction held by two jobs; none made that no job holds, except, where the style
    # cannot list (BFL), one for each uncertain job of that input at most.
    def input_of(row: dict[str, Any]) -> str:
        return canonical_json(json.loads(row["input"]))

    creates = Counter(stats["creates_by_input"])
    jobs_of = Counter(input_of(row) for row in rows)
    uncertain_of = Counter(input_of(row) for row in rows if row["state"] == "uncertain")
    duplicates = sum(max(0, n - jobs_of[key]) for key, n in creates.items())
    if duplicates:
        problems.append(f"{duplicates} creates more than jobs with their input")
    holders = Counter(row["remote_id"] for row in rows if row["remote_id"])
    shared = sorted(rid for rid, n in holders.items() if n > 1)
    if shared:
        problems.append(f"{len(shared)} predictions held by two jobs or more: {shared[:3]}")
    generations = stats["generations"]
    orphans = [g for g in generations if g["id"] not in holders]
    orphans_of = Counter(canonical_json(g["input"]) for g in orphans)
    if style == "replicate" and orphans:
        problems.append(f"{len(orphans)} predictions made that no job holds (paid, never saved)")
    over = {key: n for key, n in orphans_of.items() if n > uncertain_of[key]}
    if style != "replicate" and over:
        problems.append(f"{sum(over.values())} predictions no job holds beyond uncertain jobs")
    states_of = {row["remote_id"]: row["state"] for row in rows if row["remote_id"]}
    unsaved = [
        g["id"]
        for g in generations
        if g["id"] in states_of and g["outcome"] == "succeeded" and states_of[g["id"]] != "done"
    ]
    if unsaved:
        problems.append(f"{len(unsaved)} paid, successful predictions not saved: {unsaved[:3]}")
    uncertain_created = sum(orphans_of.values())
    if style == "replicate" and states.get("uncertain"):
        problems.append(f"{states['uncertain']} Replicate-style jobs uncertain: not reconciled")

    out = folder / "out"
    served = stats["files"]
    recorded: set[Path] = set()
    for row in rows:
        if row["state"] != "done":
            continue
        for record in json.loads(row["files"] or "[]"):
            path = Path(record["path"])
            recorded.add(path.resolve())
            if not path.is_file():
                problems.append(f"job {row['key']}: {path} is missing")
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != record["sha256"]:
                problems.append(f"job {row['key']}: {path.name} differs from its record")
            if served.get(urlsplit(record["url"]).path) != digest:
                problems.append(f"job {row['key']}: {path.name} is not what was served")
    on_disk = {p.resolve() for p in out.iterdir()} if out.is_dir() else set()
    temporary = sorted(p.name for p in on_disk if p.name.startswith("."))
    if temporary:
        problems.append(f"temporary or partial files left: {temporary[:5]}")
    sidecars = 0
    strays = []
    for path in sorted(on_disk - recorded):
        if path.name.startswith("."):
            continue
        image = path.with_suffix("")
        if path.suffix == ".json" and image in recorded:
            # the provenance record written beside an image: whole, and about that image
            sidecars += 1
            try:
                about = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                problems.append(f"{path.name} is not whole JSON")
                continue
            digest = hashlib.sha256(image.read_bytes()).hexdigest()
            if isinstance(about, dict) and about.get("image", {}).get("sha256") not in (
                None,
                digest,
            ):
                problems.append(f"{path.name} describes another image than {image.name}")
        else:
            strays.append(path.name)
    if strays:
        problems.append(f"files no job records: {strays[:5]}")
    integrity = _integrity(db)
    if integrity != "ok":
        problems.append(f"PRAGMA integrity_check: {integrity}")
    return {
        "jobs": len(rows),
        "states": dict(states),
        "done": states.get("done", 0),
        "uncertain": states.get("uncertain", 0),
        "uncertain_created": uncertain_created,
        "creates": int(stats["creates"]),
        "duplicates": duplicates,
        "orphans": len(orphans),
        "lost_answers": sum(
            stats["faults"].get(f"create:{kind}", 0)
            for kind in ("drop_after_create", "reset_after_create", "error_after_create")
        ),
        "files_checked": len(recorded),
        "sidecars_checked": sidecars,
        "integrity": integrity,
        "problems": problems,
    }


def summary(figures: dict[str, Any]) -> str:
    return (
        f"chaos ({figures['style']}, seed {figures['seed']}): {figures['jobs']} jobs, "
        f"{figures['kills']} SIGKILLs (jobs in hand at the kills: {figures['interrupted']}); "
        f"states {figures['states']}; done {figures['done']}, "
        f"uncertain {figures['uncertain']} (of which created {figures['uncertain_created']}); "
        f"creates {figures['creates']}, duplicates {figures['duplicates']}, "
        f"orphans {figures['orphans']}, create answers lost {figures['lost_answers']}; "
        f"{figures['files_checked']} files checked; integrity {figures['integrity']}; "
        f"{figures['seconds']}s ({figures['kill_phase_seconds']}s of kills)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=500, help="jobs at the start (more may be added)"
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help=f"default: ${SEED_ENV} or random")
    parser.add_argument("--style", choices=("replicate", "bfl"), default="replicate")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (kept afterwards)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = args.dir
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        figures = run_chaos(
            folder, jobs=args.jobs, kills=args.kills, seed=args.seed, style=args.style
        )
        print(summary(figures))
        print(json.dumps(figures, indent=2))
        for problem in figures["problems"]:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
