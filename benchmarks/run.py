"""The one benchmark command: `python -m benchmarks.run [--jobs N] [--quick] [--out DIR]`.

For each workload (`benchmarks.workloads`) and each contender it starts a fresh simulator
subprocess, runs the contender in its own process, reads the simulator's record, and turns it
into figures (`benchmarks.figures`); then it measures this runner's scale figures
(`benchmarks.scale`). It writes DIR/results.json (raw figures, settings, machine) and
DIR/results.md (tables), and prints the markdown. Exit code 0 when every contender finished
every job and every figure could be computed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.contenders import this_runner
from benchmarks.figures import TABLE_FIGURES, contender_figures
from benchmarks.procs import PYTHON, ROOT, SimulatorProcess, clean_env, run_measured
from benchmarks.report import render
from benchmarks.scale import scale_figures
from benchmarks.workers import postgres_workers
from benchmarks.workloads import DEFAULT_TIME_SCALE, Workload, workloads

QUICK = {
    "jobs": 30,
    "scale_jobs": 2_000,
    "enqueue_jobs": 2_000,
    "e2e_jobs": 100,
    "workers_jobs": 100,
    "hold": 3.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--jobs", type=int, default=2_000, help="jobs per workload")
    parser.add_argument(
        "--scale-jobs", type=int, default=1_000_000, help="jobs in the big database"
    )
    parser.add_argument("--enqueue-jobs", type=int, default=100_000, help="jobs to enqueue")
    parser.add_argument("--e2e-jobs", type=int, default=10_000, help="jobs for the jobs/s run")
    parser.add_argument(
        "--workers-jobs", type=int, default=2_000, help="jobs per PostgreSQL workers run"
    )
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of the RSS run")
    parser.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE)
    parser.add_argument("--quick", action="store_true", help="a tiny run (for the test)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale figures")
    parser.add_argument("--keep-work", action="store_true", help="keep DIR/work (logs, DBs)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--only",
        action="append",
        metavar="PART",
        help="run only this part (repeatable): a workload (bfl-like), one contender of it "
        "(bfl-like/runner) or `scale`; the figures are then incomplete (exit 1)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs = QUICK["jobs"]
        args.scale_jobs = QUICK["scale_jobs"]
        args.enqueue_jobs = QUICK["enqueue_jobs"]
        args.e2e_jobs = QUICK["e2e_jobs"]
        args.workers_jobs = QUICK["workers_jobs"]
        args.hold = QUICK["hold"]
    counts = (args.jobs, args.scale_jobs, args.enqueue_jobs, args.e2e_jobs, args.workers_jobs)
    if min(counts) < 1:
        parser.error("job counts must be at least 1")
    if not 0 < args.time_scale <= 1:
        parser.error("--time-scale must be in (0, 1]")
    return args


def run_user_code(
    workload: Workload, folder: Path, sim_url: str, prompts: list[str]
) -> tuple[dict[str, Any], Any]:
    """One of the user-code contenders as its own process; returns its report and usage."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts_file = folder / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    report_file = folder / "report.json"
    measured = run_measured(
        [
            PYTHON,
            "-m",
            f"benchmarks.contenders.{workload.contender}",
            "--base-url",
            sim_url,
            "--prompts",
            str(prompts_file),
            "--input",
            json.dumps(workload.input),
            "--model",
            workload.model,
            "--concurrency",
            str(workload.concurrency),
            "--poll-interval",
            repr(workload.poll_interval),
            "--time-scale",
            repr(workload.time_scale),
            "--job-timeout",
            repr(workload.time_limit()),
            "--out",
            str(folder / "out"),
            "--report",
            str(report_file),
        ],
        log=folder / "contender.log",
        timeout=workload.time_limit() + 30,
        env=clean_env(),
    )
    if not report_file.exists():
        raise RuntimeError(
            f"{workload.contender} wrote no report (exit {measured.returncode}); "
            f"see {folder / 'contender.log'}"
        )
    report: dict[str, Any] = json.loads(report_file.read_text())
    return report, measured


def run_contender(workload: Workload, name: str, folder: Path) -> dict[str, Any]:
    prompts = workload.prompts()
    with SimulatorProcess(workload.sim_config, folder / "sim") as sim:
        if name == "runner":
            report, measured = this_runner.run(workload, folder / "run", sim.url, prompts)
        else:
            report, measured = run_user_code(workload, folder / "run", sim.url, prompts)
        stats = sim.stats()
    # the raw record, for a closer look at a run kept with --keep-work
    (folder / "records.json").write_text(json.dumps({"stats": stats, "report": report}))
    return contender_figures(workload, report, stats, measured)


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "runner", "migrations"):
        commit += " with uncommitted changes"
    meminfo = Path("/proc/meminfo")
    memory = meminfo.read_text().split("\n", 1)[0] if meminfo.exists() else ""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "memory": memory,
        "runner_commit": commit,
        "runner_code_digest": runner_code_digest(),
    }


def runner_code_digest() -> str:
    """A digest of runner's source and migrations: tells whether they changed during the run."""
    digest = hashlib.sha256()
    for folder in ("runner", "migrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class CpuAccount:
    """How busy the machine was during the run, and how much of that was the benchmark.

    Machine-wide busy time comes from /proc/stat; the benchmark's own is this process and every
    child it reaped (simulators, contenders, runner). The difference is other work that competed
    for the CPU and skewed the figures: it should be near zero.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float | None, float]:
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        busy: float | None = None
        stat = Path("/proc/stat")
        if stat.exists():
            fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            # guest time is already counted in user time
            busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        return time.monotonic(), busy, own

    def summary(self) -> dict[str, float | None]:
        end = self._read()
        wall = end[0] - self._start[0]
        own = (end[2] - self._start[2]) / wall
        if end[1] is None or self._start[1] is None:
            return {"benchmark_cores": own, "machine_busy_cores": None, "other_cores": None}
        busy = (end[1] - self._start[1]) / wall
        return {"benchmark_cores": own, "machine_busy_cores": busy, "other_cores": busy - own}


def problems(results: dict[str, Any]) -> list[str]:
    """What keeps this run from being complete: unfinished jobs, figures missing."""
    found = []
    for wname, entry in results["workloads"].items():
        for cname, f in entry["contenders"].items():
            if "error" in f and "done" not in f:
                found.append(f"{wname}/{cname}: {f['error']}")
                continue
            if f["done"] != f["jobs"]:
                found.append(f"{wname}/{cname}: {f['done']} of {f['jobs']} jobs done")
            for key in TABLE_FIGURES:
                value = f.get(key)
                if not isinstance(value, int | float) or math.isnan(value):
                    found.append(f"{wname}/{cname}: no {key}")
    if "error" in results["scale"]:
        found.append(f"scale: {results['scale']['error']}")
    workers = results["scale"].get("postgres_workers", {})
    for n, f in workers.items() if "error" not in workers else ():
        if f["done"] != f["jobs"]:
            found.append(f"{n} PostgreSQL workers: {f['done']} of {f['jobs']} jobs done")
    return found


def _selected(only: list[str] | None, *names: str) -> bool:
    return only is None or any(name in only for name in names)


def measure(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    """Every workload with every contender, then the scale figures, into `results`."""
    started = time.monotonic()
    for workload in workloads(args.jobs, args.time_scale):
        entry: dict[str, Any] = {"workload": dataclasses.asdict(workload), "contenders": {}}
        results["workloads"][workload.name] = entry
        for name in ("runner", workload.contender):
            if not _selected(args.only, workload.name, f"{workload.name}/{name}"):
                continue
            print(f"[{time.monotonic() - started:6.0f} s] {workload.name}: {name}", flush=True)
            try:
                figures = run_contender(workload, name, work / workload.name / name)
            except Exception as exc:
                traceback.print_exc()
                figures = {"error": f"{type(exc).__name__}: {exc}"}
            entry["contenders"][name] = figures
    if args.no_scale or not _selected(args.only, "scale"):
        results["scale"] = {"error": "skipped (--no-scale or --only)"}
        return
    print(f"[{time.monotonic() - started:6.0f} s] scale figures", flush=True)
    try:
        results["scale"] = scale_figures(
            work / "scale",
            enqueue_jobs=args.enqueue_jobs,
            big_jobs=args.scale_jobs,
            e2e_jobs=args.e2e_jobs,
            hold_seconds=args.hold,
        )
    except Exception as exc:
        traceback.print_exc()
        results["scale"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    print(f"[{time.monotonic() - started:6.0f} s] workers through PostgreSQL", flush=True)
    pg_url = os.environ.get("RUNNER_BENCH_PG_URL") or os.environ.get("RUNNER_TEST_PG_URL")
    try:
        figures = postgres_workers(args.workers_jobs, work / "workers", pg_url)
    except Exception as exc:
        traceback.print_exc()
        figures = {"error": f"{type(exc).__name__}: {exc}"}
    results["scale"]["postgres_workers"] = figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    out: Path = args.out.resolve()
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "meta": machine() | {"command": command.strip()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workloads": {},
        "scale": {},
    }
    cpu = CpuAccount()
    measure(args, work, results)
    results["meta"] |= cpu.summary() | {"run_seconds": time.monotonic() - started}
    # runner is edited by others while benchmarks run: say so when it changed under this run
    results["meta"]["runner_changed_during_run"] = (
        runner_code_digest() != results["meta"]["runner_code_digest"]
    )
    found = problems(results)
    results["problems"] = found
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render(results)
    (out / "results.md").write_text(markdown + "\n")
    print(markdown)
    if found:
        print("incomplete run:\n  " + "\n  ".join(found), file=sys.stderr)
        print(f"logs and databases kept in {work}", file=sys.stderr)
    elif not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
