"""Broken databases through every command, as the `runner` CLI in subprocesses.

A data page overwritten, runner's tables gone, a campaign's jobs gone while its images are on
disk, a read-only file and a read-only mount: every command (run, submit, work, status, jobs,
export, gallery, retry, cancel, doctor, db upgrade) either works (the read-only commands on a
read-only database) or says what is wrong in one paragraph with exit code 2, never a
traceback, and leaves the database byte for byte as it was. A campaign without jobs whose
images are on disk is never bought again; `--from-sidecars` records them done.

Read-only files and mounts are made with real mounts (a tmpfs remounted read-only, a file
bind-mounted read-only onto itself): the tests run as root, for whom chmod changes nothing.
Where mounting is impossible they skip with the reason, except on CI (`CI` set), where that is
a failure, as in test_disk_full.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.conftest import runner_env

PROMPTS = [f"prompt number {i}: a stone bridge at dusk" for i in range(1, 13)]
JOBFILE = """campaign: accept
provider: bfl
model: flux-pro-1.1
input: {width: 256, height: 256, output_format: png}
prompts_file: prompts.txt
output: {dir: out}
"""
READERS = ("status", "jobs", "export", "gallery")
WRITERS = ("run", "submit", "work", "retry", "cancel", "doctor", "db upgrade")


def commands(folder: Path, db: str) -> dict[str, list[str]]:
    jobfile = str(folder / "jobs.yaml")
    gallery = folder.parent / f"gallery-{folder.name}"
    gallery.mkdir(exist_ok=True)
    every = {
        "run": ["run", jobfile, "--simulate"],
        "submit": ["submit", jobfile],
        "work": ["work", "--until-empty", "--simulate"],
        "status": ["status"],
        "jobs": ["jobs", "accept"],
        "export": ["export", "accept"],
        "gallery": ["gallery", "accept", "-o", str(gallery)],
        "retry": ["retry", "accept"],
        "cancel": ["cancel", "accept"],
        "doctor": ["doctor"],
        "db upgrade": ["db", "upgrade"],
    }
    return {name: [*args, "--db", db] for name, args in every.items()}


def run_all(every: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command at once, each in its own process (they all only read, or refuse)."""
    env = runner_env(BFL_API_KEY="test-key-0000")
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in every.items()
    }
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


def one_paragraph(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit code 2 and a single paragraph naming `words`; no traceback."""
    shown = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unchanged(db: Path, before: str) -> None:
    assert digest(db) == before
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A campaign of 12 jobs run to the end on the built-in simulator (made once)."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "jobs.yaml").write_text(JOBFILE)
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "-q", "run", "jobs.yaml", "--simulate"],
        cwd=folder,
        env=runner_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((folder / "out").glob("*.png.json"))) == len(PROMPTS)
    return folder


@pytest.fixture
def campaign(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished campaign of this test's own."""
    folder = tmp_path / "campaign"
    shutil.copytree(finished, folder)
    return folder


def overwrite_a_data_page(db: Path) -> None:
    """Random bytes over a page of the jobs table: one that holds a prompt."""
    with closing(sqlite3.connect(db)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = db.read_bytes()
    where = data.index(PROMPTS[6].encode())
    page = where // page_size
    assert page > 0  # not the first page (the header and the schema): a data page
    with db.open("r+b") as fh:
        fh.seek(page * page_size)
        fh.write(random.Random(7).randbytes(page_size))


def test_a_damaged_data_page_is_one_paragraph_on_every_command(campaign: Path) -> None:
    db = campaign / "runner.db"
    overwrite_a_data_page(db)
    before = digest(db)
    results = run_all(commands(campaign, str(db)), campaign)
    for name, result in results.items():
        text = one_paragraph(result, str(db), "damaged", ".recover")
        assert "nothing was changed" in text, name
    unchanged(db, before)


def test_tables_gone_are_never_set_up_again_on_any_command(campaign: Path) -> None:
    db = campaign / "runner.db"
    with closing(sqlite3.connect(db)) as conn:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (table,) in names:
            conn.execute(f"DROP TABLE {table}")
        conn.commit()
    before = digest(db)
    assert db.stat().st_size > 0
    results = run_all(commands(campaign, str(db)), campaign)
    for result in results.values():
        one_paragraph(result, str(db), "tables were lost", "--from-sidecars")
    unchanged(db, before)


def test_a_campaign_whose_jobs_are_gone_is_not_bought_again_and_comes_back_from_sidecars(
    campaign: Path,
) -> None:
    """A -wal file deleted after runner made the tables: the campaign's rows are gone, its
    images and sidecars are not."""
    db = campaign / "runner.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM jobs")
        conn.execute("DELETE FROM campaigns")
        conn.commit()
    before = digest(db)
    every = commands(campaign, str(db))
    every["dry run"] = ["run", "--dry-run", *every["run"][1:]]
    results = run_all({name: every[name] for name in ("run", "submit", "dry run")}, campaign)
    for result in results.values():
        one_paragraph(result, "campaign 'accept'", str(campaign / "out"), "--from-sidecars")
    unchanged(db, before)
    # without the database at all: the same
    moved = campaign / "moved.db"
    db.rename(moved)
    results = run_all({name: every[name] for name in ("run", "submit")}, campaign)
    for result in results.values():
        one_paragraph(result, "campaign 'accept'", "--from-sidecars")
    assert not db.exists()
    # recovered from the sidecars: every job done, nothing bought
    env = runner_env()
    recover = ["submit", "jobs.yaml", "--from-sidecars"]
    done = subprocess.run(
        [sys.executable, "-m", "runner", *recover],
        cwd=campaign,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(PROMPTS)} job(s) recorded as done from their sidecars" in done.stdout
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT state, files, remote_id FROM jobs").fetchall()
    assert {r[0] for r in rows} == {"done"} and len(rows) == len(PROMPTS)
    for _, files, remote_id in rows:
        (file,) = json.loads(files)
        assert digest(Path(file["path"])) == file["sha256"] and remote_id
    again = subprocess.run(
        [sys.executable, "-m", "runner", "run", "jobs.yaml", "--simulate"],
        cwd=campaign,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert "this process: 0 submitted" in again.stdout


def test_a_sidecar_whose_image_changed_is_not_taken_as_done(campaign: Path) -> None:
    (campaign / "runner.db").unlink()
    image = sorted((campaign / "out").glob("*.png"))[0]
    image.write_bytes(image.read_bytes() + b"\0")
    done = subprocess.run(
        [sys.executable, "-m", "runner", "submit", "jobs.yaml", "--from-sidecars"],
        cwd=campaign,
        env=runner_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(PROMPTS) - 1} job(s) recorded as done" in done.stdout
    with closing(sqlite3.connect(campaign / "runner.db")) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    assert states == {"done": len(PROMPTS) - 1, "queued": 1}


# -- read-only -------------------------------------------------------------------------------


def _sh(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def skip_unless_ci(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the read-only database tests, but {reason}")
    pytest.skip(reason)


def _can_mount() -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        skip_unless_ci("mounting needs root; this test runs as a normal user")
    if shutil.which("mount") is None:
        skip_unless_ci("no `mount` command here")


def _unmount(point: Path) -> None:
    for _ in range(50):
        if _sh("umount", str(point)).returncode == 0:
            return
        time.sleep(0.1)  # a process that read it may still be closing its files
    _sh("umount", "-l", str(point))


@pytest.fixture
def read_only_mount(campaign: Path, tmp_path: Path) -> Iterator[Path]:
    """The campaign's database on a tmpfs remounted read-only: the folder it returns."""
    _can_mount()
    point = tmp_path / "ro"
    point.mkdir()
    mounted = _sh("mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(point))
    if mounted.returncode != 0:
        skip_unless_ci(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        shutil.copy2(campaign / "runner.db", point / "runner.db")
        if (remount := _sh("mount", "-o", "remount,ro", str(point))).returncode != 0:
            skip_unless_ci(f"mount -o remount,ro failed: {remount.stderr.strip()}")
        yield point
    finally:
        _unmount(point)


@pytest.fixture
def read_only_file(campaign: Path) -> Iterator[Path]:
    """The campaign's database file bind-mounted read-only onto itself (its folder stays
    writable): the file it returns."""
    _can_mount()
    db = campaign / "runner.db"
    bound = _sh("mount", "--bind", str(db), str(db))
    if bound.returncode != 0:
        skip_unless_ci(f"mount --bind failed: {bound.stderr.strip()}")
    try:
        if (remount := _sh("mount", "-o", "remount,bind,ro", str(db))).returncode != 0:
            skip_unless_ci(f"mount -o remount,bind,ro failed: {remount.stderr.strip()}")
        yield db
    finally:
        _unmount(db)


def check_read_only(
    results: dict[str, subprocess.CompletedProcess[str]], db: Path, campaign: Path
) -> None:
    """The readers show the finished campaign; every other command refuses."""
    for name in READERS:
        result = results[name]
        assert result.returncode == 0, (name, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    assert f"accept: {len(PROMPTS)}/{len(PROMPTS)} done" in results["status"].stdout
    assert results["jobs"].stdout.count(" done ") == len(PROMPTS)
    records = [json.loads(line) for line in results["export"].stdout.splitlines()]
    assert [r["state"] for r in records] == ["done"] * len(PROMPTS)
    assert f"{len(PROMPTS)} job(s) in" in results["gallery"].stdout
    for name in WRITERS:
        one_paragraph(results[name], str(db), "read-only")


def test_a_database_on_a_read_only_mount_is_read_and_never_written(
    read_only_mount: Path, campaign: Path
) -> None:
    db = read_only_mount / "runner.db"
    before = digest(db)
    results = run_all(commands(campaign, str(db)), campaign)
    check_read_only(results, db, campaign)
    assert "mounted read-only" in results["run"].stderr
    assert digest(db) == before and sorted(os.listdir(read_only_mount)) == ["runner.db"]


def test_a_read_only_file_is_read_and_never_written(read_only_file: Path, campaign: Path) -> None:
    before = digest(read_only_file)
    results = run_all(commands(campaign, str(read_only_file)), campaign)
    check_read_only(results, read_only_file, campaign)
    assert digest(read_only_file) == before


def test_a_read_only_mount_holding_a_write_ahead_log_is_read_with_it(
    campaign: Path, tmp_path: Path
) -> None:
    """A copy taken while a process had the database open: the last change is only in the
    -wal file. Read-only (not immutable) reading sees it."""
    _can_mount()
    point = tmp_path / "ro"
    point.mkdir()
    if _sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)).returncode != 0:
        skip_unless_ci("mount -t tmpfs failed")
    try:
        db = campaign / "runner.db"
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("UPDATE jobs SET error = 'only-in-the-wal' WHERE idx = 3")
            conn.commit()
            for suffix in ("", "-wal", "-shm"):
                shutil.copy2(f"{db}{suffix}", point / f"runner.db{suffix}")
        assert _sh("mount", "-o", "remount,ro", str(point)).returncode == 0
        copy = str(point / "runner.db")
        results = run_all(
            {name: args for name, args in commands(campaign, copy).items() if name == "jobs"},
            campaign,
        )
        assert results["jobs"].returncode == 0, results["jobs"].stderr
        assert "only-in-the-wal" in results["jobs"].stdout
    finally:
        _unmount(point)


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_postgresql_tables_dropped_with_outputs_on_disk(
    finished: Path, tmp_path: Path, pg_url: str
) -> None:
    folder = tmp_path / "campaign"
    shutil.copytree(finished, folder)
    (folder / "runner.db").unlink()
    env = runner_env()
    recovered = subprocess.run(
        [sys.executable, "-m", "runner", "submit", "jobs.yaml", "--db", pg_url, "--from-sidecars"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert recovered.returncode == 0, recovered.stderr
    engine = sa.create_engine(pg_url)

    def tables() -> set[str]:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())

    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE jobs")
        # some of runner's tables left: every command refuses, db upgrade too
        left = tables()
        results = run_all(commands(folder, pg_url), folder)
        for result in results.values():
            one_paragraph(result, "tables were lost")
        assert tables() == left
        with engine.begin() as conn:
            for table in sorted(left):
                conn.exec_driver_sql(f"DROP TABLE {table} CASCADE")
        # none left: it looks new, but the campaign's images are on disk
        every = commands(folder, pg_url)
        upgrade = every.pop("db upgrade")
        results = run_all(every, folder)
        for name in ("run", "submit"):
            one_paragraph(results[name], "campaign 'accept'", "--from-sidecars")
        for name in ("work", *READERS, "retry", "cancel", "doctor"):
            one_paragraph(results[name], "holds no runner tables")
        assert tables() == set()  # nothing was set up
        # `db upgrade` sets up what it is asked to; a run still finds the images on disk
        assert run_all({"db upgrade": upgrade}, folder)["db upgrade"].returncode == 0
        results = run_all({name: every[name] for name in ("run", "submit")}, folder)
        for result in results.values():
            one_paragraph(result, "has no job of campaign 'accept'")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar() == 0
    finally:
        engine.dispose()
