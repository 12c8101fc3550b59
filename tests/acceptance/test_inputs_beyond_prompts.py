"""Image inputs from local files, folder expansion, model matrix and templates, end to end."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.acceptance.conftest import SimProcess, db_rows, run_cli

ROOT = Path(__file__).resolve().parents[2]


def sent_inputs(simulator: SimProcess) -> list[dict[str, object]]:
    return [json.loads(text) for text in simulator.stats()["creates_by_input"]]


def test_folder_of_photos_is_sent_as_base64_to_bfl(tmp_path: Path, simulator: SimProcess) -> None:
    shutil.copytree(ROOT / "examples", tmp_path, dirs_exist_ok=True)
    result = run_cli("run", "edit-photos.yaml", "--simulator-url", simulator.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    photos = sorted((tmp_path / "photos").iterdir())
    rows = db_rows(tmp_path / "runner.db")
    assert len(rows) == 2 * len(photos) and {r["state"] for r in rows} == {"done"}
    sent = {body["input_image"] for body in sent_inputs(simulator)}
    assert sent == {base64.b64encode(p.read_bytes()).decode() for p in photos}
    # The database holds a reference to each photo, not its bytes.
    stored = [json.loads(r["input"])["input_image"] for r in rows]
    assert all(set(s) >= {"$file", "sha256"} for s in stored)
    names = sorted(p.name for p in (tmp_path / "out" / "edit-photos").iterdir())
    assert any("harbour" in n for n in names) and any("lighthouse" in n for n in names)


def test_replicate_gets_a_data_url_and_a_changed_file_fails_the_job(
    tmp_path: Path, simulator: SimProcess
) -> None:
    Image.new("RGB", (32, 32), "teal").save(tmp_path / "ref.png")
    Image.new("RGB", (32, 32), "plum").save(tmp_path / "other.png")
    (tmp_path / "jobs.yaml").write_text(
        "campaign: refs\nprovider: replicate\nmodel: black-forest-labs/flux-kontext-pro\n"
        "prompts:\n  - {prompt: make it gold, input_image: ref.png}\n"
        "  - {prompt: make it silver, input_image: other.png}\n"
    )
    submitted = run_cli("submit", "jobs.yaml", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    Image.new("RGB", (32, 32), "red").save(tmp_path / "other.png")  # changed after queueing
    result = run_cli("run", "jobs.yaml", "--simulator-url", simulator.url, cwd=tmp_path)
    # The changed file makes a new job (its key hashes the content) and fails the old one.
    assert result.returncode == 1
    by_prompt = {}
    for row in db_rows(tmp_path / "runner.db"):
        by_prompt.setdefault(json.loads(row["input"])["prompt"], []).append(row)
    assert [r["state"] for r in by_prompt["make it gold"]] == ["done"]
    assert sorted(r["state"] for r in by_prompt["make it silver"]) == ["done", "failed"]
    failed = next(r for r in by_prompt["make it silver"] if r["state"] == "failed")
    assert "changed" in failed["error"]
    (gold,) = [b for b in sent_inputs(simulator) if b["prompt"] == "make it gold"]
    expected = base64.b64encode((tmp_path / "ref.png").read_bytes()).decode()
    assert gold["input_image"] == f"data:image/png;base64,{expected}"


@pytest.mark.sim_config({"duration_median": 0.2})
def test_model_matrix_and_prompt_templates(tmp_path: Path, simulator: SimProcess) -> None:
    shutil.copytree(ROOT / "examples", tmp_path, dirs_exist_ok=True)
    result = run_cli("run", "styles-matrix.yaml", "--simulator-url", simulator.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = db_rows(tmp_path / "runner.db")
    # (3 animals x 2 styles + 3 animals x 1 style) prompts x 2 models
    assert len(rows) == (6 + 3) * 2 and {r["state"] for r in rows} == {"done"}
    routes = simulator.stats()["creates_by_route"]
    assert routes == {"/v1/{model}": 18}
    models = {r["model"] for r in rows}
    assert models == {"flux-pro-1.1", "flux-dev"}
    prompts = {json.loads(r["input"])["prompt"] for r in rows}
    assert "a owl in deep snow, linocut print" in prompts
    assert all("{" not in p for p in prompts)
    assert all(json.loads(r["meta"])["vars"] for r in rows)
