"""A provider that answers creates with ids of a megabyte and more, against the `runner` CLI as
a subprocess: the run ends on its own, the database stays small, and every job says why."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.conftest import (
    db_rows,
    run_cli,
    start_simulator,
    stop_simulator,
    write_jobfile,
)

MB = 1_000_000
PROMPTS = ["a fox", "an owl", "a heron"]


def _run(
    tmp_path: Path, style: str, id_size: int, provider_extra: str = "", *db: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    sim = start_simulator(
        tmp_path, {"duration_median": 0.3, "duration_sigma": 0.2, "oversized": {"id": id_size}}
    )
    try:
        jobfile = write_jobfile(
            tmp_path, sim.url, PROMPTS, style=style, provider_extra=provider_extra
        )
        started = time.monotonic()
        try:
            result = run_cli("run", str(jobfile), *db, cwd=tmp_path, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the run did not end on its own within a minute")
        took = time.monotonic() - started
        assert sim.stats()["creates"] == len(PROMPTS)  # each sent once, never again
    finally:
        stop_simulator(sim)
    return result, took


def _database_size(tmp_path: Path) -> int:
    return sum(p.stat().st_size for p in tmp_path.glob("runner.db*"))


def _check_output(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert len(output) < 20_000  # no megabyte id in a log line either
    assert f"{len(PROMPTS)} job(s) are uncertain" in output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("style", "provider_extra"),
    [("replicate", ", prefer_wait: null"), ("replicate", ""), ("bfl", "")],
    ids=["replicate-polled", "replicate-prefer-wait", "bfl"],
)
def test_creates_answered_with_a_megabyte_id_end_the_run_uncertain(
    tmp_path: Path, style: str, provider_extra: str
) -> None:
    result, took = _run(tmp_path, style, MB, provider_extra)
    print(f"1 MB ids, {style}{provider_extra}: ended in {took:.1f}s, exit {result.returncode}")
    _check_output(result)
    size = _database_size(tmp_path)
    assert size < MB, f"the database holds {size:,} bytes"
    rows = db_rows(tmp_path / "runner.db")
    assert [r["state"] for r in rows] == ["uncertain"] * len(PROMPTS)
    for row in rows:
        assert row["remote_id"] is None
        assert "1,000,000 characters long, more than the 200 runner takes" in row["error"]
        assert "runner retry accept --uncertain" in row["error"]


@pytest.mark.slow
def test_a_create_answered_with_a_30_mb_id_is_never_read_whole(tmp_path: Path) -> None:
    result, took = _run(tmp_path, "bfl", 30 * MB)
    print(f"30 MB ids, bfl: ended in {took:.1f}s, exit {result.returncode}")
    _check_output(result)
    assert _database_size(tmp_path) < MB
    for row in db_rows(tmp_path / "runner.db"):
        assert row["state"] == "uncertain" and row["remote_id"] is None
        assert "the answer is longer than 1,048," in row["error"]
        assert "the most runner reads (1 MiB of an API answer" in row["error"]
    with sqlite3.connect(tmp_path / "runner.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.slow
@pytest.mark.postgres
def test_on_postgresql_a_megabyte_id_ends_the_run_uncertain(tmp_path: Path, pg_url: str) -> None:
    result, _ = _run(tmp_path, "replicate", MB, ", prefer_wait: null", "--db", pg_url)
    _check_output(result)
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT state, remote_id, error FROM jobs")).all()
    finally:
        engine.dispose()
    assert [r.state for r in rows] == ["uncertain"] * len(PROMPTS)
    assert all(r.remote_id is None and "more than the 200" in r.error for r in rows)
