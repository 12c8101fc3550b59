"""`runner jobs`, `runner export` and the provenance sidecars, on a campaign run by the CLI.

One campaign per module, run against a simulator subprocess in three rounds: prompts that
succeed, then prompts whose generation fails, then prompts that are moderated (the simulator's
`fail_rate` and `moderate_rate`, switched on between the rounds so the outcome is certain).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import (
    SimProcess,
    db_rows,
    run_cli,
    start_simulator,
    stop_simulator,
    write_jobfile,
)

DONE = [
    "a lighthouse at dawn, watercolour",
    "a red paper lantern on a rainy night street",
    'a fox reading "War & Peace", oil on canvas',
    "<b>bold</b> owl <img src=x onerror=\"document.title='pwned'\"> <script>pwned=1</script>",
    "Straße in Ærøskøbing bei Nacht, café lanterns",
]
FAILED = ["a lighthouse made of glass, shattering", "a clockwork whale in a teacup"]
MODERATED = ["a lighthouse nobody may see"]
ALL = DONE + FAILED + MODERATED


@dataclass
class Built:
    folder: Path
    jobfile: Path
    db: Path
    sim: SimProcess


def build_campaign(folder: Path, sim: SimProcess, name: str = "accept") -> Path:
    """Run DONE, then FAILED with every generation failing, then MODERATED ones moderated."""
    jobfile = write_jobfile(folder, sim.url, DONE, name=name)
    first = run_cli("run", str(jobfile), cwd=folder)
    assert first.returncode == 0, first.stderr
    sim.configure(faults={"create": {"fail_rate": 1.0}})
    write_jobfile(folder, sim.url, DONE + FAILED, name=name)
    second = run_cli("run", str(jobfile), cwd=folder)
    assert second.returncode == 1, second.stderr
    sim.configure(faults={"create": {"fail_rate": 0.0, "moderate_rate": 1.0}})
    write_jobfile(folder, sim.url, ALL, name=name)
    third = run_cli("run", str(jobfile), cwd=folder)
    assert third.returncode == 1, third.stderr
    sim.configure(faults={"create": None})
    return jobfile


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("reports")
    sim = start_simulator(folder, {"duration_median": 0.2, "duration_sigma": 0.2})
    try:
        jobfile = build_campaign(folder, sim)
        yield Built(folder, jobfile, folder / "runner.db", sim)
    finally:
        stop_simulator(sim)


def rows(db: Path) -> list[dict[str, Any]]:
    out = []
    for row in db_rows(db, "SELECT * FROM jobs ORDER BY id"):
        record = dict(row)
        for name in ("input", "meta", "files"):
            record[name] = json.loads(record[name]) if record[name] else None
        out.append(record)
    return out


def cli(built: Built, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--db", str(built.db), cwd=built.folder, timeout=60)


def epoch(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 0.002)


@pytest.mark.timeout(120)
def test_campaign_has_done_failed_and_moderated_jobs(built: Built) -> None:
    states = [r["state"] for r in rows(built.db)]
    assert states == ["done"] * len(DONE) + ["failed"] * len(FAILED) + ["moderated"]


@pytest.mark.timeout(60)
def test_jobs_text_has_one_line_per_job_with_state_and_reason(built: Built) -> None:
    result = cli(built, "jobs", "accept")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:4] == ["KEY", "PROMPT", "STATE", "TRIES"]
    db = rows(built.db)
    assert len(lines) == len(db)
    for line, row in zip(lines, db, strict=True):
        assert line.startswith(row["key"] + " ")
        assert f"  {row['state']} " in line
        assert row["remote_id"] in line
        if row["state"] != "done":
            assert row["error"] and row["error"][:30] in line
    # A long prompt is shortened on its line; an HTML prompt is printed as text.
    assert "<b>bold</b> owl" in lines[3] and lines[3].count("…") == 1

    problems = cli(built, "jobs", "accept", "--state", "failed,moderated")
    assert problems.returncode == 0, problems.stderr
    keys = [line.split()[0] for line in problems.stdout.splitlines()[1:]]
    assert keys == [r["key"] for r in db if r["state"] in ("failed", "moderated")]


@pytest.mark.timeout(60)
def test_jobs_json_lines_match_the_database(built: Built) -> None:
    result = cli(built, "jobs", "accept", "--json")
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    db = rows(built.db)
    assert [item["key"] for item in listed] == [r["key"] for r in db]
    for item, row in zip(listed, db, strict=True):
        assert set(item) == {
            "campaign",
            "key",
            "index",
            "prompt",
            "model",
            "state",
            "attempts",
            "remote_id",
            "error",
            "files",
            "updated_at",
        }
        assert item["campaign"] == "accept" and item["index"] == row["idx"]
        assert item["prompt"] == row["meta"]["prompt"]
        assert (item["state"], item["attempts"]) == (row["state"], row["attempts"])
        assert (item["remote_id"], item["error"]) == (row["remote_id"], row["error"])
        assert item["files"] == [f["path"] for f in row["files"] or []]
        assert close(epoch(item["updated_at"]), row["updated_at"])
    assert [i["prompt"] for i in listed] == ALL


@pytest.mark.timeout(60)
def test_jobs_refuses_unknown_states_and_campaigns(built: Built) -> None:
    bad = cli(built, "jobs", "accept", "--state", "done,finished")
    assert bad.returncode == 2 and "finished" in bad.stderr and "moderated" in bad.stderr
    unknown = cli(built, "jobs", "nope")
    assert unknown.returncode == 2 and "no campaign named 'nope'" in unknown.stderr
    missing = run_cli("jobs", "accept", "--db", str(built.folder / "none.db"), cwd=built.folder)
    assert missing.returncode == 2 and not (built.folder / "none.db").exists()


def check_manifest(record: dict[str, Any], row: dict[str, Any]) -> None:
    assert record["campaign"] == "accept" and record["key"] == row["key"]
    assert record["index"] == row["idx"]
    assert record["prompt"] == row["meta"]["prompt"]
    assert record["input"] == row["input"]
    assert record["seed"] == row["meta"]["seed"]
    assert (record["provider"], record["model"]) == ("bfl", "flux-pro-1.1")
    assert (record["remote_id"], record["state"]) == (row["remote_id"], row["state"])
    assert (record["attempts"], record["cost"], record["error"]) == (
        row["attempts"],
        row["cost"],
        row["error"],
    )
    files = row["files"] or []
    assert record["files"] == [
        {"path": f["path"], "sha256": f["sha256"], "bytes": f["bytes"]} for f in files
    ]
    for name in ("created_at", "submitted_at", "ready_at", "finished_at"):
        assert close(epoch(record[name]), row[name]), name
    assert close(record["total_seconds"], row["finished_at"] - row["created_at"])
    assert close(record["queue_seconds"], row["submitted_at"] - row["created_at"])
    if row["state"] == "done":
        assert close(record["generation_seconds"], row["ready_at"] - row["submitted_at"])
        assert close(record["download_seconds"], row["finished_at"] - row["ready_at"])
    else:
        assert record["download_seconds"] is None


@pytest.mark.timeout(60)
def test_export_jsonl_to_stdout_matches_the_database(built: Built) -> None:
    result = cli(built, "export", "accept")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    db = rows(built.db)
    assert len(records) == len(db)
    for record, row in zip(records, db, strict=True):
        check_manifest(record, row)
    assert records[-1]["state"] == "moderated" and records[-1]["files"] == []


@pytest.mark.timeout(60)
def test_export_csv_to_a_file_atomically(built: Built) -> None:
    target = built.folder / "manifest.csv"
    target.write_text("an older manifest\n")
    result = cli(built, "export", "accept", "--format", "csv", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and f"{len(ALL)} record(s) written" in result.stderr
    assert not list(built.folder.glob(".manifest.csv*")), "temporary file left behind"
    with target.open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    db = rows(built.db)
    assert len(table) == len(db)
    for cells, row in zip(table, db, strict=True):
        assert cells["key"] == row["key"] and cells["prompt"] == row["meta"]["prompt"]
        assert json.loads(cells["input"]) == row["input"]
        assert cells["state"] == row["state"] and cells["error"] == (row["error"] or "")
        assert cells["remote_id"] == row["remote_id"]
        files = row["files"] or []
        assert cells["paths"] == "\n".join(f["path"] for f in files)
        assert cells["sha256"] == "\n".join(f["sha256"] for f in files)
        assert close(epoch(cells["finished_at"]), row["finished_at"])
        assert close(float(cells["total_seconds"]), row["finished_at"] - row["created_at"])
        assert cells["seed"] == "" and cells["reused_from"] == ""
    # The same bytes on stdout.
    stdout = cli(built, "export", "accept", "--format", "csv")
    assert list(csv.DictReader(io.StringIO(stdout.stdout, newline=""))) == table

    nowhere = cli(built, "export", "accept", "-o", str(built.folder / "no" / "m.jsonl"))
    assert nowhere.returncode == 2 and "does not exist" in nowhere.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(60)
def test_a_sidecar_beside_every_image(built: Built) -> None:
    out = built.folder / "out"
    done = [r for r in rows(built.db) if r["state"] == "done"]
    images = sorted(p for p in out.iterdir() if not p.name.endswith(".json"))
    sidecars = sorted(p for p in out.iterdir() if p.name.endswith(".json"))
    assert len(images) == len(sidecars) == len(done)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    for row in done:
        (file,) = row["files"]
        image = Path(file["path"])
        # Sidecar only: the image is exactly the provider's bytes, as the database says.
        assert sha256(image) == file["sha256"]
        record = json.loads(image.with_name(image.name + ".json").read_text(encoding="utf-8"))
        assert record["format"] == "runner-provenance/1" and record["runner_version"]
        assert record["prompt"] == row["meta"]["prompt"]
        assert (record["campaign"], record["key"]) == ("accept", row["key"])
        assert (record["provider"], record["model"]) == ("bfl", "flux-pro-1.1")
        assert record["input"] == row["input"] and record["remote_id"] == row["remote_id"]
        assert record["seed"] == row["meta"]["seed"]
        assert record["image"] == {
            "n": 1,
            "of": 1,
            "sha256": file["sha256"],
            "bytes": file["bytes"],
        }
        for name in ("created_at", "submitted_at", "ready_at", "finished_at"):
            assert close(epoch(record[name]), row[name]), name


@pytest.mark.timeout(60)
def test_export_sidecars_rewrites_lost_and_damaged_ones(built: Built) -> None:
    done = [r for r in rows(built.db) if r["state"] == "done"]
    first, second = (Path(r["files"][0]["path"] + ".json") for r in done[:2])
    good = first.read_bytes()
    first.unlink()
    second.write_text("{broken")
    result = cli(built, "export", "accept", "--sidecars")
    assert result.returncode == 0, result.stderr
    assert f"2 sidecar(s) written, {len(done) - 2} already up to date" in result.stdout
    assert first.read_bytes() == good
    assert json.loads(second.read_text())["key"] == done[1]["key"]


@pytest.mark.timeout(120)
def test_a_crash_between_image_and_sidecar_is_repaired_on_resume(built: Built) -> None:
    """Killed after the image was placed and before the job was recorded done: the job is
    still `downloading`; the next run fetches it again, keeps the identical file, and writes
    the sidecar then."""
    row = next(r for r in rows(built.db) if r["state"] == "done")
    image = Path(row["files"][0]["path"])
    sidecar = image.with_name(image.name + ".json")
    sidecar.unlink()
    downloads = built.sim.stats()["downloads"]
    with contextlib.closing(sqlite3.connect(built.db)) as conn, conn:
        conn.execute(
            "UPDATE jobs SET state = 'downloading', files = '[]', finished_at = NULL, "
            "next_attempt_at = 0 WHERE id = ?",
            (row["id"],),
        )
    again = run_cli("run", str(built.jobfile), cwd=built.folder)
    assert again.returncode == 1, again.stderr  # the failed and moderated jobs are still there
    after = next(r for r in rows(built.db) if r["id"] == row["id"])
    assert after["state"] == "done" and after["files"][0]["path"] == str(image)
    assert sha256(image) == after["files"][0]["sha256"] == row["files"][0]["sha256"]
    assert json.loads(sidecar.read_text())["key"] == row["key"]
    assert built.sim.stats()["downloads"] == downloads + 1
    assert len(list(image.parent.glob("*~2*"))) == 0  # no second copy of the image
