"""A campaign end to end through the CLI: the example, re-runs, appended prompts."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.acceptance.conftest import SimProcess, db_rows, run_cli, write_jobfile

ROOT = Path(__file__).resolve().parents[2]


def images_in(folder: Path) -> list[Path]:
    """The images of an output folder: not temporary files, not provenance sidecars."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix != ".json")


def db_states(db: Path) -> dict[str, int]:
    return {r[0]: r[1] for r in db_rows(db, "SELECT state, count(*) FROM jobs GROUP BY state")}


def test_example_campaign_runs_on_the_builtin_simulator(tmp_path: Path) -> None:
    """The README's first command: the example job file with --simulate, nothing else."""
    for name in ("jobs.example.yaml", "prompts.example.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = run_cli("run", "jobs.example.yaml", "--simulate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    states = db_states(tmp_path / "runner.db")
    total = sum(states.values())
    assert states == {"done": total} and total >= 10
    images = images_in(tmp_path / "out" / "example")
    assert len(images) == total
    for path in images:
        with Image.open(path) as image:
            image.verify()
    assert not list((tmp_path / "out" / "example").glob(".*"))  # no temporary files left


def test_second_run_submits_nothing_new(tmp_path: Path, simulator: SimProcess) -> None:
    for name in ("jobs.example.yaml", "prompts.example.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    args = ("run", "jobs.example.yaml", "--simulator-url", simulator.url)
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    created = simulator.stats()["creates"]
    assert created == sum(db_states(tmp_path / "runner.db").values())
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "0 new job(s)" in second.stdout
    assert simulator.stats()["creates"] == created


def test_appended_prompts_add_only_those_jobs(tmp_path: Path, simulator: SimProcess) -> None:
    prompts = [f"a lantern number {i}" for i in range(5)]
    jobfile = write_jobfile(tmp_path, simulator.url, prompts)
    first = run_cli("run", str(jobfile), cwd=tmp_path)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "5 new job(s)" in first.stdout
    before = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images_in(tmp_path / "out")
    }

    jobfile = write_jobfile(tmp_path, simulator.url, [*prompts, "a heron", "a kite", "a moth"])
    second = run_cli("run", str(jobfile), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "3 new job(s), 5 already known" in second.stdout
    stats = simulator.stats()
    assert stats["creates"] == 8
    assert set(stats["creates_by_input"].values()) == {1}
    after = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in images_in(tmp_path / "out")
    }
    assert len(after) == 8
    assert all(after[name] == digest for name, digest in before.items())  # nothing rewritten


@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_files_match_what_the_provider_served(
    tmp_path: Path, simulator: SimProcess, style: str
) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, [f"bird {i}" for i in range(6)], style=style)
    result = run_cli("run", str(jobfile), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    served = set(simulator.stats()["files"].values())
    saved = {hashlib.sha256(p.read_bytes()).hexdigest() for p in images_in(tmp_path / "out")}
    assert len(saved) == 6 and saved <= served
    rows = db_rows(tmp_path / "runner.db")
    assert all(row["remote_id"] and row["files"] for row in rows)
    assert simulator.stats()["downloads_with_auth"] == 0  # the key never went to the file host
