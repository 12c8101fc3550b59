"""Two job files naming one campaign, through the CLI against a simulator process.

A second file with the same `campaign:` and another provider account, style or models is
refused (exit 2, the database byte for byte as it was, nothing sent, both sides named);
`--move-queued` moves the queued jobs over, and the jobs already created are followed at the
account that created them. Changing limits, budget or output between runs goes on working.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import (
    KEY_ENV,
    SimProcess,
    db_rows,
    run_cli,
    runner_env,
    start_cli,
    wait_for,
    write_jobfile,
)

OTHER_KEY_ENV = "RUNNER_TEST_OTHER_KEY"
PROMPTS = [f"a copper kettle, take {i}" for i in range(6)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def states(db: Path) -> dict[str, int]:
    return {r[0]: r[1] for r in db_rows(db, "SELECT state, count(*) FROM jobs GROUP BY state")}


def settings_of(db: Path, name: str = "accept") -> dict[str, Any]:
    rows = db_rows(db, f"SELECT settings FROM campaigns WHERE name = '{name}'")
    return dict(json.loads(rows[0][0]))


def one_paragraph(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def key_hashes(sim: SimProcess) -> dict[str, int]:
    """Creates per account (the simulator keys predictions by the API key)."""
    out: dict[str, int] = {}
    for generation in sim.stats()["generations"]:
        out[generation["key_hash"]] = out.get(generation["key_hash"], 0) + 1
    return out


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@pytest.mark.parametrize(
    "change",
    ["style", "base_url", "key_env", "models"],
)
def test_a_second_job_file_naming_the_campaign_with_other_settings_is_refused(
    tmp_path: Path, simulator: SimProcess, change: str
) -> None:
    first = write_jobfile(tmp_path, simulator.url, PROMPTS[:3])
    assert run_cli("submit", str(first), cwd=tmp_path).returncode == 0
    db = tmp_path / "runner.db"
    before = digest(db)
    other = tmp_path / "other"
    other.mkdir()
    if change == "style":
        second = write_jobfile(other, simulator.url, ["a dog"], style="replicate")
        says = ["replicate style", "black-forest-labs/flux-schnell"]
        has = ["bfl style", "flux-pro-1.1"]
    elif change == "base_url":
        second = write_jobfile(other, simulator.url, ["a dog"])
        second.write_text(second.read_text().replace(f"'{simulator.url}'", f"'{simulator.url}/x'"))
        says, has = [f"at {simulator.url}/x,"], [f"at {simulator.url},"]
    elif change == "key_env":
        second = write_jobfile(other, simulator.url, ["a dog"])
        second.write_text(second.read_text().replace(KEY_ENV, OTHER_KEY_ENV))
        says, has = [OTHER_KEY_ENV], [KEY_ENV]
    else:
        second = write_jobfile(other, simulator.url, ["a dog"])
        second.write_text(second.read_text().replace("model: flux-pro-1.1", "model: flux-dev"))
        says, has = ["model flux-dev"], ["model flux-pro-1.1"]
    env = runner_env(**{OTHER_KEY_ENV: "other-key-0000"})
    for command in (["run"], ["submit"], ["run", "--dry-run"]):
        result = run_cli(*command, str(second), "--db", str(db), cwd=other, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        text = one_paragraph(result.stderr)
        assert "campaign 'accept'" in text and str(db) in text and str(second) in text
        for part in [*has, *says]:
            assert part in text, (part, text)
        assert "--move-queued" in text and "campaign:" in text
        assert digest(db) == before
        assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    assert simulator.stats()["creates"] == 0
    assert states(db) == {"queued": 3}


def test_rerunning_a_file_with_changed_limits_budget_and_output_goes_on(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(
        tmp_path, simulator.url, PROMPTS[:3], extra="limits: {max_in_flight: 2}\n"
    )
    first = run_cli("run", str(jobfile), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    changed = (
        "limits: {max_in_flight: 5, creates_per_minute: 300}\n"
        "budget: {max_jobs: 50, price_per_image: 0.05}\npriority: 20\ndeadline: 30m\n"
    )
    jobfile = write_jobfile(tmp_path, simulator.url, PROMPTS[:5], extra=changed)
    jobfile.write_text(
        jobfile.read_text().replace("{dir: out}", "{dir: out2, name: '{index}-{slug}.{ext}'}")
    )
    second = run_cli("run", str(jobfile), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "2 new job(s), 3 already known" in second.stdout
    settings = settings_of(tmp_path / "runner.db")
    assert settings["limits"]["max_in_flight"] == 5 and settings["priority"] == 20
    assert settings["budget"]["max_jobs"] == 50 and settings["output_dir"].endswith("out2")
    assert states(tmp_path / "runner.db") == {"done": 5}
    assert simulator.stats()["creates"] == 5


def test_move_queued_sends_the_queued_jobs_to_the_new_account(
    tmp_path: Path, simulator: SimProcess
) -> None:
    first = write_jobfile(tmp_path, simulator.url, PROMPTS[:4])
    assert run_cli("submit", str(first), cwd=tmp_path).returncode == 0
    db = tmp_path / "runner.db"
    ids_before = {r[0]: r[1] for r in db_rows(db, "SELECT key, id FROM jobs")}
    # the same jobs, at another account: another key variable, another key
    second = write_jobfile(tmp_path, simulator.url, PROMPTS[:4])
    second.write_text(second.read_text().replace(KEY_ENV, OTHER_KEY_ENV))
    env = runner_env(**{OTHER_KEY_ENV: "other-key-0000"})
    moved = run_cli("run", str(second), "--move-queued", cwd=tmp_path, env=env)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "4 queued job(s) follow the job file, 0 withdrawn" in moved.stdout
    assert states(db) == {"done": 4}
    assert {r[0]: r[1] for r in db_rows(db, "SELECT key, id FROM jobs")} == ids_before
    assert key_hashes(simulator) == {key_hash("other-key-0000"): 4}
    assert OTHER_KEY_ENV in json.dumps(settings_of(db)["provider"])
    # and from now on the file is the campaign's: a plain run again is no clash
    again = run_cli("run", str(second), cwd=tmp_path, env=env)
    assert again.returncode == 0 and "0 new job(s), 4 already known" in again.stdout


def test_move_queued_to_another_style_withdraws_what_the_file_does_not_list(
    tmp_path: Path, simulator: SimProcess
) -> None:
    first = write_jobfile(tmp_path, simulator.url, PROMPTS[:3])
    assert run_cli("submit", str(first), cwd=tmp_path).returncode == 0
    second = write_jobfile(tmp_path, simulator.url, ["a dog", "a cow"], style="replicate")
    moved = run_cli("run", str(second), "--move-queued", cwd=tmp_path)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "0 queued job(s) follow the job file, 3 withdrawn" in moved.stdout
    db = tmp_path / "runner.db"
    models = {r[0] for r in db_rows(db, "SELECT model FROM jobs")}
    assert models == {"black-forest-labs/flux-schnell"} and states(db) == {"done": 2}
    generations = simulator.stats()["generations"]
    assert [g["style"] for g in generations] == ["replicate", "replicate"]


@pytest.mark.timeout(180)
@pytest.mark.sim_config({"duration_median": 4.0, "duration_sigma": 0.05})
def test_jobs_created_before_a_move_are_followed_at_the_account_that_created_them(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, PROMPTS, extra="limits: {max_in_flight: 2}\n")
    db = tmp_path / "runner.db"
    worker = start_cli("run", str(jobfile), cwd=tmp_path)

    def two_running() -> bool:
        return states(db).get("running", 0) == 2 and not states(db).get("submitting")

    wait_for(two_running, 60, "two jobs created at the first account")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    running = {r[0] for r in db_rows(db, "SELECT key FROM jobs WHERE state = 'running'")}

    # the same campaign, moved to another account (another key) while two jobs generate
    second = jobfile.with_name("moved.yaml")
    second.write_text(jobfile.read_text().replace(KEY_ENV, OTHER_KEY_ENV))
    env = runner_env(**{OTHER_KEY_ENV: "other-key-0000"})
    moved = run_cli("run", str(second), "--move-queued", cwd=tmp_path, env=env, timeout=150)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert states(db) == {"done": len(PROMPTS)}
    created = key_hashes(simulator)
    first_key, other_key = key_hash("test-key-0000"), key_hash("other-key-0000")
    assert created[first_key] >= 2 and created[first_key] + created[other_key] == len(PROMPTS)
    assert sum(simulator.stats()["creates_by_input"].values()) == len(PROMPTS)  # none twice
    # the jobs created at the first account were saved from there, not bought again
    done_at = {g["id"]: g["key_hash"] for g in simulator.stats()["generations"]}
    rows = db_rows(db, "SELECT key, remote_id FROM jobs")
    assert {done_at[r[1]] for r in rows if r[0] in running} == {first_key}
    assert "2 job(s) already created stay with the account that created them" in moved.stdout
    assert len(settings_of(db)["followed"][0]["jobs"]) == 2
    # settled now: the next submit stops following them
    assert run_cli("submit", str(second), cwd=tmp_path, env=env).returncode == 0
    assert "followed" not in settings_of(db)
