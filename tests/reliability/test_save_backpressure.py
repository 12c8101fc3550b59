"""Backpressure from saving, end to end: while results cannot be saved, no new ones are bought.

The `runner` CLI runs as a subprocess against the simulator in another subprocess, over real
sockets, with a BFL-style campaign (its result URLs expire). Mid-run the output folder stops
taking files: its small file system fills up (a tmpfs or a loop ext4, as in test_disk_full), or
the runner's limit of open files is lowered to nothing (prlimit). What is measured comes from
the simulator's own record of when each create arrived, against the time the runner logged the
first failed save: creates stop within a second of it, downloads are retried meanwhile, no
result expires, and once saving works again creates resume and the campaign completes with
every file on disk.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import re
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner import app
from runner.campaign import Limits
from runner.simulator import SimConfig, running_in_thread
from runner.store import Store, open_store
from runner.worker.pool import PoolOptions
from tests.acceptance.conftest import (
    KEY_ENV,
    SimProcess,
    runner_env,
    start_simulator,
    stop_simulator,
)
from tests.factories import BFL, campaign
from tests.reliability.test_disk_full import any_small_fs, entries, fill

__all__ = ["any_small_fs"]  # the fixture, shared with test_disk_full

JOBS = 40
IN_FLIGHT = 4
PAUSE_WITHIN = 1.0  # seconds from the first failed save to the last create before saving works
HOLD = 3.0  # seconds the folder stays unwritable after the first failed save
# Results stay fetchable far longer than the test runs; the runner is not told so, and
# expiry works as ever (tests/unit/test_states.py: a gone URL is expired even mid-episode).
URL_TTL = 300.0
SIM = {"duration_median": 0.4, "duration_sigma": 0.2, "bfl_url_ttl": URL_TTL}
_ASCTIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(line: str) -> float:
    """The epoch time of a runner log line (logging's asctime: local time, milliseconds)."""
    match = _ASCTIME.match(line)
    assert match is not None, line
    return time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + (
        int(match.group(2)) / 1000
    )


@dataclass
class Run:
    """`runner run` in a subprocess, its output read line by line as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def first(self, *needles: str) -> str | None:
        return next((ln for ln in list(self.lines) if any(n in ln for n in needles)), None)

    def output(self) -> str:
        return "\n".join(self.lines[-60:])


@contextmanager
def running(folder: Path, sim: SimProcess, out: str) -> Iterator[Run]:
    (folder / "prompts.txt").write_text(
        "".join(f"a lantern number {i}\n" for i in range(JOBS)), encoding="utf-8"
    )
    (folder / "jobs.yaml").write_text(
        "campaign: pressure\n"
        f"provider: {{preset: bfl, base_url: '{sim.url}', api_key_env: {KEY_ENV}}}\n"
        "model: flux-pro-1.1\n"
        "input: {width: 256, height: 256, output_format: png}\n"
        "prompts_file: prompts.txt\n"
        f"output: {{dir: {out}}}\n"
        f"limits: {{max_in_flight: {IN_FLIGHT}}}\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", "jobs.yaml", "--db", str(folder / "runner.db")],
        cwd=folder,
        env=runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = Run(process)
    reader = threading.Thread(target=run.read, daemon=True)
    reader.start()
    try:
        yield run
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, run: Run) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if run.process.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s; the runner said:\n{run.output()}")


def images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []


def jobs(db: Path) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT key, state, error, files FROM jobs").fetchall()


def create_times(sim: SimProcess) -> list[float]:
    return sorted(g["created_at"] for g in sim.stats()["generations"])


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimProcess]:
    sim = start_simulator(tmp_path, SIM)
    yield sim
    stop_simulator(sim)


@dataclass(frozen=True)
class Measured:
    first_failure: float  # when the runner logged the first failed save
    freed: float  # when the test made saving possible again
    last_create_before_freed: float  # seconds after the first failure (<= 0: none after it)
    creates_in_pause: int  # creates later than PAUSE_WITHIN after it, before saving worked
    creates_after: int  # creates once saving worked again
    downloads_retried: int  # file requests while saving failed
    expired: int  # jobs whose result was lost


def hold_unwritable(
    run: Run, sim: SimProcess, db: Path, out: Path, break_it: Callable[[], None], *needles: str
) -> tuple[float, int]:
    """Break saving once some images are saved; return when the first failed save was logged
    (found by `needles`), and the file requests made in the HOLD seconds after it. While it
    is held, the results are waiting to be saved, not lost."""
    wait_until(lambda: len(images(out)) >= 8, 60, "8 saved images", run)
    break_it()
    line = wait_until(lambda: run.first(*needles), 30, f"log line with {needles}", run)
    failed_at = log_time(line)
    downloads = sim.stats()["downloads"]
    deadline = time.monotonic() + max(0.0, failed_at + HOLD - time.time())
    while time.monotonic() < deadline:  # the pause lasts as long as saving fails
        states = {row["state"] for row in jobs(db)}
        assert not states & {"expired", "failed"}, (states, run.output())
        time.sleep(0.05)
    waiting = [row for row in jobs(db) if row["state"] == "downloading"]
    assert waiting, "no result was waiting to be saved"
    return failed_at, sim.stats()["downloads"] - downloads


def finish(
    run: Run, sim: SimProcess, db: Path, out: Path, failed_at: float, retried: int
) -> Measured:
    """Saving works again from now: the campaign must complete, every file on disk."""
    freed = time.time()
    try:
        code = run.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not finish:\n{run.output()}") from None
    assert code == 0, run.output()
    rows = jobs(db)
    expired = sum(row["state"] == "expired" for row in rows)
    print(f"\nexpired: {expired}")
    assert {row["state"] for row in rows} == {"done"}, [tuple(r) for r in rows if r[1] != "done"]
    assert len(rows) == JOBS
    for row in rows:
        (record,) = json.loads(row["files"])
        path = Path(record["path"])
        assert path.parent == out and path.stat().st_size == record["bytes"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    assert len(images(out)) == JOBS
    assert [p for p in out.iterdir() if p.name.endswith(".part")] == []
    created = create_times(sim)
    assert len(created) == JOBS, "a job was created twice"
    before = [t for t in created if t < freed]
    last = max(before) - failed_at
    return Measured(
        first_failure=failed_at,
        freed=freed,
        last_create_before_freed=last,
        creates_in_pause=sum(1 for t in before if t > failed_at + PAUSE_WITHIN),
        creates_after=sum(1 for t in created if t >= freed),
        downloads_retried=retried,
        expired=expired,
    )


def check(measured: Measured, run: Run) -> None:
    print(f"\nmeasured: {measured}")
    assert measured.creates_in_pause == 0, (measured, run.output())
    assert measured.last_create_before_freed <= PAUSE_WITHIN, measured
    assert measured.creates_after > 0, "creates never resumed"
    assert measured.downloads_retried > 0, "downloads were not retried while saving failed"


def test_a_full_disk_pauses_creates_and_every_result_is_saved_once_space_returns(
    tmp_path: Path, simulator: SimProcess, any_small_fs: Path
) -> None:
    out = any_small_fs / "out"
    filler = any_small_fs / "filler"
    db = tmp_path / "runner.db"
    with running(tmp_path, simulator, str(out.relative_to(tmp_path))) as run:
        failed_at, retried = hold_unwritable(
            run,
            simulator,
            db,
            out,
            lambda: fill(filler, leave=0),
            "cannot save results in",  # the warning
            "the disk is full",  # each failed download's line (the only one before)
        )
        warning = run.first("cannot save results in")
        assert warning is not None and "WARNING" in warning, run.output()
        assert str(out) in warning and "No space left on device (ENOSPC)" in warning
        assert "new creates of pressure are paused" in warning.lower()
        assert f"free space (or inodes) on the disk holding {out}" in warning
        assert sum("cannot save results in" in ln for ln in run.lines) == 1  # once an episode
        filler.unlink()
        measured = finish(run, simulator, db, out, failed_at, retried)
    resumed = run.first("works again after")
    assert resumed is not None and "new creates of pressure resume" in resumed, run.output()
    check(measured, run)


def test_out_of_file_descriptors_pauses_creates_too(tmp_path: Path, simulator: SimProcess) -> None:
    """prlimit lowers the running runner's limit of open files to 3: every file or socket it
    opens from then on fails with EMFILE (the ones it holds stay usable), until it is raised
    again."""
    out = tmp_path / "out"
    db = tmp_path / "runner.db"
    with running(tmp_path, simulator, "out") as run:
        pid = run.process.pid
        limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)

        def starve() -> None:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, limits[1]))

        try:
            failed_at, retried = hold_unwritable(
                run, simulator, db, out, starve, "too many open files", "Too many open files"
            )
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        warning = run.first("cannot save results in")
        assert warning is not None, run.output()
        assert "Too many open files (EMFILE)" in warning and "ulimit -n" in warning
        measured = finish(run, simulator, db, out, failed_at, retried)
    check(measured, run)


# -- in one process: which campaigns pause, and what still ends -------------------------------


@contextmanager
def working(
    store: Store, names: list[str], sim_url: str, *, limit: float = 60.0, progress: float = 0
) -> Iterator[threading.Thread]:
    """The worker (app.work) in a thread of its own until the campaigns settle."""
    failure: list[BaseException] = []

    def work() -> None:
        async def main() -> None:
            with anyio.fail_after(limit):
                await app.work(
                    store,
                    names,
                    sim_url=sim_url,
                    options=PoolOptions(tick=0.05),
                    handle_signals=False,
                    progress_every=progress,
                )

        try:
            anyio.run(main)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=limit + 10)
    assert not thread.is_alive(), "the worker did not stop"
    assert not failure, failure


def states_of(store: Store, name: str) -> Counter[str]:
    return Counter(job.state.value for job in store.jobs(name))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def test_only_campaigns_saving_to_the_full_file_system_pause(
    tmp_path: Path, any_small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`full` saves to the full file system, `later` to a folder on it not made yet (which
    counts by its nearest existing parent), `elsewhere` to another file system: only the
    first two stop creating, and the progress lines say so while it lasts."""
    caplog.set_level(logging.INFO, logger="runner")
    filler = any_small_fs / "filler"
    fill(filler, leave=0)
    folders = {
        "full": any_small_fs / "out",
        "later": any_small_fs / "not" / "made" / "yet",
        "elsewhere": tmp_path / "elsewhere",
    }
    folders["full"].mkdir()
    n, in_flight = 6, 2
    store = open_store(str(tmp_path / "runner.db"))
    try:
        for name, folder in folders.items():
            # An account each (by its key's variable), so that each has its own slots.
            provider = dataclasses.replace(BFL, api_key_env=f"KEY_{name.upper()}")
            limits = Limits(max_in_flight=in_flight)
            store.enqueue(campaign(name, n=n, out=folder, provider=provider, limits=limits))
        config = SimConfig(duration_median=0.2, duration_sigma=0.1, bfl_url_ttl=URL_TTL)
        with (
            running_in_thread(config=config) as sim,
            working(store, list(folders), sim.url, progress=0.1),
        ):
            try:
                wait_for(lambda: states_of(store, "elsewhere")["done"] == n, 30, "elsewhere")
                paused = {name: states_of(store, name) for name in ("full", "later")}
                # As many rounds of progress lines again as `elsewhere` took to finish.
                seen = len(caplog.records)
                wait_for(lambda: len(caplog.records) > seen + 30, 30, "more log lines")
                for name, counts in paused.items():
                    # What was created before the first failed save (a slot freed by a result
                    # going to be saved may be taken before that save fails) and no more.
                    assert counts["queued"] >= n - 2 * in_flight, (name, counts)
                    assert states_of(store, name) == counts, name
                    assert set(counts) == {"queued", "downloading"}, (name, counts)
                progress = [r.getMessage() for r in caplog.records[seen:]]
                for name in ("full", "later"):
                    assert any(
                        m.startswith(f"{name}: ") and "saving paused (No space left" in m
                        for m in progress
                    ), progress
                elsewhere = [m for m in progress if m.startswith("elsewhere: ")]
                assert elsewhere and not any("saving paused" in m for m in elsewhere)
                (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
                assert "New creates of full, later are paused" in warning.getMessage()
                created = sum(c["downloading"] for c in paused.values())
                assert sim.sim.stats()["creates"] == n + created
            finally:
                filler.unlink(missing_ok=True)
        assert {name: states_of(store, name) for name in folders} == {
            name: Counter(done=n) for name in folders
        }
        for name, folder in folders.items():
            saved = [Path(f["path"]) for job in store.jobs(name) for f in job.files]
            assert len(saved) == n and all(p.parent == folder and p.is_file() for p in saved)
        assert sim.sim.stats()["creates"] == 3 * n
    finally:
        store.close()


def test_a_result_whose_url_dies_while_the_disk_is_full_still_expires(
    tmp_path: Path, any_small_fs: Path
) -> None:
    """Expiry is as it was: retries of a local failure fetch the file again each time, and
    once the provider no longer serves it the job is `expired` (not retried forever, not
    failed), and a run with nothing queued still ends."""
    fill(any_small_fs / "filler", leave=0)
    out = any_small_fs / "out"
    out.mkdir()
    ttl = 1.5
    store = open_store(str(tmp_path / "runner.db"))
    try:
        store.enqueue(campaign("short", n=3, out=out, limits=Limits(max_in_flight=3)))
        config = SimConfig(duration_median=0.2, duration_sigma=0.1, bfl_url_ttl=ttl)
        started = time.monotonic()
        with running_in_thread(config=config) as sim, working(store, ["short"], sim.url, limit=20):
            pass
        took = time.monotonic() - started
        jobs_ = store.jobs("short")
        assert {job.state.value for job in jobs_} == {"expired"}, [
            (j.state, j.error) for j in jobs_
        ]
        assert all("no longer served" in (job.error or "") for job in jobs_)
        assert sim.sim.stats()["creates"] == 3
        assert took >= ttl, took  # it was retried until its URL died, not given up at once
        assert entries(out) == []
    finally:
        store.close()


def test_with_nothing_left_to_download_a_probe_lifts_the_pause(
    tmp_path: Path, any_small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The results in hand expire while the disk is full (their URLs live 1.5 s here): no save
    is left that could succeed and end the pause. The probe does, once space is freed, and
    the jobs still queued are created and saved then; nothing was created meanwhile."""
    caplog.set_level(logging.INFO, logger="runner")
    filler = any_small_fs / "filler"
    fill(filler, leave=0)
    out = any_small_fs / "out"
    out.mkdir()
    n, in_flight = 6, 2
    store = open_store(str(tmp_path / "runner.db"))
    try:
        store.enqueue(campaign("probed", n=n, out=out, limits=Limits(max_in_flight=in_flight)))
        config = SimConfig(duration_median=0.2, duration_sigma=0.1, bfl_url_ttl=1.5)
        with running_in_thread(config=config) as sim, working(store, ["probed"], sim.url, limit=20):
            try:
                counts = wait_for(
                    lambda: (c := states_of(store, "probed")).keys() == {"queued", "expired"} and c,
                    30,
                    "the results in hand expired",
                )
                assert counts["queued"] >= n - 2 * in_flight, counts
                # No save is left to end the pause: only a probe can, and none can yet.
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    assert states_of(store, "probed") == counts
                    time.sleep(0.05)
                assert not any("works again after" in r.getMessage() for r in caplog.records)
            finally:
                filler.unlink(missing_ok=True)
        final = states_of(store, "probed")
        assert final == Counter(expired=counts["expired"], done=n - counts["expired"]), final
        resumed = [r.getMessage() for r in caplog.records if "works again after" in r.getMessage()]
        assert len(resumed) == 1 and "new creates of probed resume" in resumed[0]
        assert sim.sim.stats()["creates"] == n
        assert [name for name in entries(out) if name.endswith(".part")] == []  # no probe left
    finally:
        store.close()


_STARVED = """
import errno, json, os, resource, sys
from pathlib import Path

import anyio

from runner.worker.download import DownloadError, Fetched, FileClient, copy_file, fetch, probe

folder, source, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
temp = folder / ".t.part"


async def main():
    seen = {}
    calls = {
        "connect": lambda: fetch(client, url, folder, "t"),
        "temporary file": lambda: anyio.to_thread.run_sync(
            Fetched(url, folder, temp, None, b"x", "png", "0" * 64, 1).save, lambda e: "a." + e
        ),
        "probe": lambda: anyio.to_thread.run_sync(probe, folder),
        "reused source": lambda: anyio.to_thread.run_sync(
            copy_file, source, folder, lambda e: "b." + e, "t"
        ),
    }
    async with FileClient(timeout=5) as client:
        for what, call in calls.items():
            resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))  # no new descriptor at all
            try:
                await call()
                seen[what] = "no error"
            except DownloadError as error:
                seen[what] = [error.local, error.code, str(error)]
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(json.dumps(seen))


anyio.run(main)
"""


def test_out_of_descriptors_is_local_in_every_part_of_a_save(tmp_path: Path) -> None:
    """A real EMFILE (the limit of open files lowered to 3 in a subprocess) when connecting for
    the file, opening the temporary file, probing or copying a reused result: each is this
    machine's failure (retried strike-free, and pausing creates), with its errno."""
    folder = tmp_path / "out"
    folder.mkdir()
    source = tmp_path / "source.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with socket.socket() as listener:  # a port that is listening: only the socket call fails
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.png"
        done = subprocess.run(
            [sys.executable, "-c", _STARVED, str(folder), str(source), url],
            capture_output=True,
            text=True,
            timeout=60,
            env=runner_env(),
            check=False,
        )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert set(seen) == {"connect", "temporary file", "probe", "reused source"}
    for what, (local, code, message) in seen.items():
        assert local and code == errno.EMFILE, (what, message)
        assert "too many open files" in message.lower(), (what, message)
    assert sorted(p.name for p in folder.iterdir()) == []  # nothing left behind
