"""Stops that keep what was paid for: `--max-runtime`, one SIGINT or one SIGTERM leave no
created prediction behind at the provider; a second signal stops at once; `--grace 0` stops as
soon as the jobs in hand are done; an idle `runner work` stops at the first signal.

The simulator's own record (`GET /_sim/stats`, `generations`: every prediction created, with
when it ended) is the judge of what was created and when it finished, not the runner's database.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
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

# BFL-style: 24 tasks in flight at most, generations of a few seconds.
FEW_SECONDS = {"duration_median": 3.0, "duration_sigma": 0.2, "seed": 11}
LIMITS = "limits: {max_in_flight: 24, creates_per_minute: 100000}\n"


@dataclass
class Output:
    """A runner process's output, read as it comes, each line with the time it was read."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.time(), line))

    def _first(self, text: str) -> float | None:
        return next((at for at, line in list(self.lines) if text in line), None)

    def seen(self, text: str, timeout: float) -> float:
        """When a line holding `text` was first read (waits for one, with a deadline)."""
        wait_for(
            lambda: self._first(text) is not None or self.process.poll() is not None,
            timeout,
            f"a line with {text!r}",
        )
        if self._first(text) is None:  # the process ended: its last lines may still be coming
            self._reader.join(timeout=10)
        at = self._first(text)
        assert at is not None, f"no line with {text!r}:\n" + self.text()[-3000:]
        return at

    def text(self) -> str:
        return "".join(line for _, line in list(self.lines))

    def wait(self, timeout: float) -> int:
        """The exit code, once every line is read."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def generations(simulator: SimProcess) -> list[dict[str, Any]]:
    return list(simulator.stats()["generations"])


def assert_every_success_saved(tmp_path: Path, gens: list[dict[str, Any]]) -> int:
    """Each prediction that succeeded at the provider belongs to a done job whose file is on
    disk with the sha256 the database recorded. Returns how many there were."""
    by_remote = {r["remote_id"]: r for r in db_rows(tmp_path / "runner.db") if r["remote_id"]}
    succeeded = [g for g in gens if g["phase"] == "succeeded"]
    lost = []
    for g in succeeded:
        row = by_remote.get(g["id"])
        if row is None or row["state"] != "done":
            lost.append((g["id"], None if row is None else row["state"]))
            continue
        files = json.loads(row["files"])
        assert files, row["key"]
        for f in files:
            path = Path(f["path"])
            path = path if path.is_absolute() else tmp_path / path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], path
    assert not lost, f"{len(lost)} of {len(succeeded)} paid-for results not saved: {lost[:5]}"
    return len(succeeded)


def running_after(gens: list[dict[str, Any]], at: float) -> int:
    """Predictions created before `at` that were still generating at `at`."""
    return sum(
        1 for g in gens if g["created_at"] <= at and (g["ended_at"] is None or g["ended_at"] > at)
    )


def worker_rows(db: Path) -> list[dict[str, Any]]:
    return [dict(r) for r in db_rows(db, "SELECT * FROM workers")]


@pytest.mark.timeout(120)
@pytest.mark.sim_config(FEW_SECONDS)
@pytest.mark.parametrize("how", ["max-runtime", "SIGTERM", "SIGINT"])
def test_a_stop_saves_every_prediction_already_created(
    tmp_path: Path, simulator: SimProcess, how: str
) -> None:
    """150 jobs, 24 in flight, 3 s each: the stop comes with 24 predictions generating. Every
    one of them is polled and saved before the runner exits (3: the rest waits)."""
    jobfile = write_jobfile(
        tmp_path, simulator.url, [f"a heron in reeds, take {i}" for i in range(150)], extra=LIMITS
    )
    args = ["run", str(jobfile)] + (["--max-runtime", "10s"] if how == "max-runtime" else [])
    out = Output(start_cli(*args, cwd=tmp_path))
    if how == "max-runtime":
        said = out.seen("max runtime reached", 60)
    else:
        wait_for(lambda: simulator.stats()["creates"] >= 60, 60, "the campaign to be under way")
        out.process.send_signal(getattr(signal, how))
        said = out.seen(how, 10)
    # The stop came at `said` at the latest: what was generating then is what is at stake.
    at_stake = running_after(generations(simulator), said)
    assert at_stake >= 12, at_stake  # predictions really were running when the stop came

    code = out.wait(60)
    ended = time.time()
    output = out.text()
    assert code == 3, output[-3000:]
    assert "Traceback" not in output
    gens = generations(simulator)
    assert all(g["created_at"] <= said for g in gens), "a create was sent after the stop"
    left = [g["id"] for g in gens if g["ended_at"] is None]
    assert not left, f"{len(left)} predictions left generating at the provider"
    saved = assert_every_success_saved(tmp_path, gens)
    states = {r["state"] for r in db_rows(tmp_path / "runner.db")}
    assert states <= {"queued", "done"}, states  # the rest waits, untouched, for the next run
    assert "queued" in states
    # The progress output said what the stop waits for, and until when.
    assert f"stopping ({'max runtime reached' if how == 'max-runtime' else how})" in output
    assert "created jobs to be saved, until" in output
    print(
        f"\n{how}: {len(gens)} predictions created before the stop, {at_stake} generating at "
        f"the stop; {saved} on disk after; the drain took {ended - said:.1f} s"
    )


@pytest.mark.timeout(120)
@pytest.mark.sim_config({"duration_median": 6.0, "duration_sigma": 0.1, "seed": 12})
def test_status_shows_the_stop_and_a_second_sigint_stops_at_once(
    tmp_path: Path, simulator: SimProcess
) -> None:
    n = 48
    jobfile = write_jobfile(
        tmp_path, simulator.url, [f"a barn owl, take {i}" for i in range(n)], extra=LIMITS
    )
    db = tmp_path / "runner.db"
    out = Output(start_cli("run", str(jobfile), cwd=tmp_path))
    wait_for(lambda: simulator.stats()["creates"] >= 24, 60, "24 predictions in flight")
    out.process.send_signal(signal.SIGINT)
    out.seen("SIGINT", 10)

    # While it waits for its 24 predictions, `runner status` says so on the worker's line.
    wait_for(lambda: any(w["stopping"] for w in worker_rows(db)), 10, "the stop to be written")
    shown = run_cli("status", "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    (worker,) = json.loads(shown.stdout)["workers"]
    stopping = worker["stopping"]
    assert stopping["reason"] == "SIGINT"
    assert stopping["until"] - stopping["since"] == pytest.approx(15 * 60)  # the default grace
    assert 1 <= stopping["waiting"] <= 24, stopping
    text = run_cli("status", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if f"pid {out.process.pid}" in x)
    assert "stopping (SIGINT)" in line and "created job" in line and "at most" in line, line
    assert out.process.poll() is None, "it did not wait for what it had created"

    # A second SIGINT: out at once, though predictions are still generating.
    second = time.time()
    out.process.send_signal(signal.SIGINT)
    code = out.wait(30)
    took = time.time() - second
    assert code == 3, out.text()[-3000:]
    assert took < 4.0, took
    assert "Traceback" not in out.text()
    gens = generations(simulator)
    assert running_after(gens, time.time()) >= 12  # they were left generating
    rows = db_rows(db)
    assert all(r["lease_owner"] is None for r in rows), "a lease outlived its process"
    assert not [r for r in rows if r["state"] == "submitting"], "a create left in limbo"

    # The next run picks up what was left generating: saved, none created twice.
    again = run_cli("run", str(jobfile), cwd=tmp_path, timeout=90)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {r["state"] for r in db_rows(db)} == {"done"}
    stats = simulator.stats()
    assert stats["creates"] == n and set(stats["creates_by_input"].values()) == {1}
    assert assert_every_success_saved(tmp_path, stats["generations"]) == n


@pytest.mark.timeout(120)
@pytest.mark.sim_config(FEW_SECONDS)
def test_grace_0_stops_as_soon_as_the_jobs_in_hand_are_done(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(
        tmp_path, simulator.url, [f"a stoat, take {i}" for i in range(150)], extra=LIMITS
    )
    out = Output(
        start_cli("run", str(jobfile), "--max-runtime", "5s", "--grace", "0", cwd=tmp_path)
    )
    said = out.seen("max runtime reached", 60)
    code = out.wait(30)
    took = time.time() - said
    assert code == 3, out.text()[-3000:]
    assert took < 2.5, took  # it did not wait for the 3 s generations
    assert "--grace 0" in out.text()  # and said it would not
    gens = generations(simulator)
    assert running_after(gens, time.time()) >= 12  # left generating, for the next run
    rows = db_rows(tmp_path / "runner.db")
    assert {r["state"] for r in rows} <= {"queued", "running", "done"}
    assert all(r["lease_owner"] is None for r in rows)


def test_grace_takes_a_duration_or_0(tmp_path: Path) -> None:
    result = run_cli("run", "jobs.yaml", "--grace", "a while", cwd=tmp_path)
    assert result.returncode == 2
    assert "--grace" in result.stderr and "duration" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_worker_stops_at_the_first_signal(
    tmp_path: Path, simulator: SimProcess, signum: int
) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, [f"a wren, take {i}" for i in range(3)])
    assert run_cli("run", str(jobfile), cwd=tmp_path).returncode == 0
    out = Output(start_cli("work", cwd=tmp_path))  # waits for new campaigns
    out.seen("looking for new work", 30)
    sent = time.time()
    out.process.send_signal(signum)
    code = out.wait(10)
    assert code == 3, out.text()[-3000:]
    assert time.time() - sent < 3.0
    assert "Traceback" not in out.text()
    assert worker_rows(tmp_path / "runner.db") == []
