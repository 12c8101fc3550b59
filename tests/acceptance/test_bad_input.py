"""Invalid job files: one clear paragraph, exit code 2, the database untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.acceptance.conftest import KEY_ENV, run_cli, runner_env

GOOD = """\
campaign: good
provider: {preset: bfl, api_key_env: RUNNER_TEST_KEY}
model: flux-pro-1.1
prompts: [a lantern, a kite]
output: {dir: out}
"""

CASES = {
    "missing model": ("campaign: x\nprovider: bfl\nprompts: [a]\n", ["model"]),
    "missing campaign": ("provider: bfl\nmodel: flux-dev\nprompts: [a]\n", ["campaign"]),
    "wrong type": (
        "campaign: x\nprovider: bfl\nmodel: flux-dev\nprompts: [a]\n"
        "limits: {max_in_flight: lots}\n",
        ["max_in_flight", "line 5"],
    ),
    "unknown preset": (
        "campaign: x\nprovider: replicat\nmodel: flux-dev\nprompts: [a]\n",
        ["replicat", "replicate"],
    ),
    "unreadable prompts file": (
        "campaign: x\nprovider: bfl\nmodel: flux-dev\nprompts_file: nowhere.txt\n",
        ["nowhere.txt"],
    ),
    "empty prompts": ("campaign: x\nprovider: bfl\nmodel: flux-dev\nprompts: []\n", ["prompt"]),
    "unknown key": (
        "campaign: x\nprovider: bfl\nmodel: flux-dev\npromts: [a]\n",
        ["promts"],
    ),
    "not yaml": ("campaign: [unclosed\n", ["jobs.yaml"]),
    # BFL answers a create asking for a webhook without the polling URL runner follows it by
    "bfl webhook_url": (
        "campaign: x\nprovider: bfl\nmodel: flux-dev\n"
        "input: {webhook_url: 'https://example.com/hook'}\nprompts: [a]\n",
        ["line 4", "webhook_url", "polling"],
    ),
    "bfl webhook_secret in a prompt": (
        "campaign: x\nprovider: bfl\nmodel: flux-dev\nprompts:\n"
        "  - {prompt: a, webhook_secret: s3cret}\n",
        ["line 5", "webhook_secret"],
    ),
    "unknown route": (
        "campaign: x\nprovider: {preset: cometapi, routes: [lst]}\nmodel: a/b\nprompts: [a]\n",
        ["routes", "lst", "list, cancel"],
    ),
}


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("runner.db*"))
    }


@pytest.fixture
def folder_with_db(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD)
    result = run_cli("submit", "good.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_job_file_exits_2_and_changes_nothing(folder_with_db: Path, case: str) -> None:
    text, must_mention = CASES[case]
    (folder_with_db / "jobs.yaml").write_text(text)
    before = fingerprint(folder_with_db)
    result = run_cli("run", "jobs.yaml", "--simulate", cwd=folder_with_db)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("error:") and "jobs.yaml" in message
    for word in must_mention:
        assert word in message, message
    assert fingerprint(folder_with_db) == before
    assert not (folder_with_db / "out").exists()


def test_missing_api_key_names_the_variable(folder_with_db: Path) -> None:
    before = fingerprint(folder_with_db)
    env = {k: v for k, v in runner_env().items() if k != KEY_ENV}
    result = run_cli("run", "good.yaml", cwd=folder_with_db, env=env)
    assert result.returncode == 2
    assert KEY_ENV in result.stderr and "Traceback" not in result.stderr
    assert fingerprint(folder_with_db) == before


def test_status_on_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("status", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert result.returncode == 2 and "no runner database" in result.stderr
    assert not (tmp_path / "none.db").exists()
