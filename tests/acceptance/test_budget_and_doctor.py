"""Budget guards, --dry-run, on_finish hooks and `runner doctor`: the CLI as a subprocess
against the simulator in its own process."""

from __future__ import annotations

import hashlib
import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import (
    KEY_ENV,
    SimProcess,
    db_rows,
    run_cli,
    runner_env,
    write_jobfile,
)

pytestmark = pytest.mark.timeout(120)


def states(tmp_path: Path) -> dict[str, int]:
    rows = db_rows(tmp_path / "runner.db", "SELECT state, count(*) AS n FROM jobs GROUP BY state")
    return {row["state"]: row["n"] for row in rows}


def spent(tmp_path: Path) -> float:
    (row,) = db_rows(tmp_path / "runner.db", "SELECT coalesce(sum(cost), 0) AS c FROM jobs")
    return float(row["c"])


# -- budgets ------------------------------------------------------------------------------------


def test_max_cost_pauses_submissions_and_a_raised_limit_continues(
    tmp_path: Path, simulator: SimProcess
) -> None:
    prompts = [f"lantern {i}" for i in range(8)]
    # The simulator reports 4 credits a task: 10 allows two.
    jobfile = write_jobfile(tmp_path, simulator.url, prompts, extra="budget: {max_cost: 10}\n")
    first = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert first.returncode == 3, first.stderr
    assert "campaign accept reached its max_cost of 10.00 (spent 8.00" in first.stderr
    assert "raise budget.max_cost in the job file and run again" in first.stderr
    assert simulator.stats()["creates"] == 2
    assert spent(tmp_path) <= 10
    assert states(tmp_path) == {"done": 2, "queued": 6}  # what was paid for was fetched

    jobfile.write_text(jobfile.read_text().replace("max_cost: 10", "max_cost: 1000"))
    second = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert second.returncode == 0, second.stderr
    assert states(tmp_path) == {"done": 8}
    assert simulator.stats()["creates"] == 8  # nothing twice


@pytest.mark.sim_config({"bfl_cost": None})
def test_max_cost_counts_price_per_image_when_the_api_reports_no_cost(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        [f"owl {i}" for i in range(6)],
        extra="budget: {max_cost: 3, price_per_image: 1}\n",
    )
    result = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "reached its max_cost of 3.00 (spent 3.00)" in result.stderr
    assert simulator.stats()["creates"] == 3
    assert states(tmp_path) == {"done": 3, "queued": 3}


def test_max_jobs_limits_the_creates_of_each_run(tmp_path: Path, simulator: SimProcess) -> None:
    jobfile = write_jobfile(
        tmp_path, simulator.url, [f"fox {i}" for i in range(5)], extra="budget: {max_jobs: 2}\n"
    )
    first = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert first.returncode == 3, first.stderr
    assert "campaign accept reached its max_jobs of 2 for this run (2 submitted)" in first.stderr
    assert simulator.stats()["creates"] == 2
    assert states(tmp_path) == {"done": 2, "queued": 3}
    second = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert second.returncode == 3 and simulator.stats()["creates"] == 4
    third = run_cli("work", "--until-empty", cwd=tmp_path, timeout=60)
    assert third.returncode == 0, third.stderr  # one left: under the limit
    assert states(tmp_path) == {"done": 5} and simulator.stats()["creates"] == 5


# -- dry run ------------------------------------------------------------------------------------


def test_dry_run_creates_no_database_and_sends_nothing(
    tmp_path: Path, simulator: SimProcess
) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, ["a", "b", "c"])
    dry = run_cli("run", str(jobfile), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "accept: 3 new job(s), 0 already known" in dry.stdout
    assert "estimated cost of the new jobs: unknown" in dry.stdout
    assert not (tmp_path / "runner.db").exists()
    assert simulator.stats()["creates"] == 0

    assert run_cli("run", str(jobfile), cwd=tmp_path, timeout=60).returncode == 0
    (tmp_path / "prompts.txt").write_text("a\nb\nc\nd\ne\n")
    before = hashlib.sha256((tmp_path / "runner.db").read_bytes()).hexdigest()
    again = run_cli("run", str(jobfile), "--dry-run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "accept: 2 new job(s), 3 already known" in again.stdout
    # the average of the done jobs of flux-pro-1.1: 4 credits each
    assert "estimated cost of the new jobs: 8.00 (the average cost" in again.stdout
    assert hashlib.sha256((tmp_path / "runner.db").read_bytes()).hexdigest() == before
    assert states(tmp_path) == {"done": 3} and simulator.stats()["creates"] == 3

    jobfile.write_text(jobfile.read_text() + "budget: {price_per_image: 0.25}\n")
    priced = run_cli("run", str(jobfile), "--dry-run", cwd=tmp_path)
    assert "estimated cost of the new jobs: 0.50 (0.25 each" in priced.stdout


# -- on_finish ----------------------------------------------------------------------------------


HOOK = """\
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[1])
out.write_text(json.dumps({"stdin": sys.stdin.read(), "env": os.environ["RUNNER_SUMMARY"]}))
"""


def test_on_finish_command_gets_the_summary(tmp_path: Path, simulator: SimProcess) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    seen = tmp_path / "seen.json"
    command = json.dumps(f"{sys.executable} {hook} {seen}")  # a YAML double-quoted string
    jobfile = write_jobfile(
        tmp_path, simulator.url, ["x", "y", "z"], extra=f"on_finish: {{command: {command}}}\n"
    )
    result = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    got = json.loads(seen.read_text())
    assert got["stdin"] == got["env"]
    summary = json.loads(got["stdin"])
    assert summary == {
        "campaign": "accept",
        "outcome": "finished",
        "reason": None,
        "states": {"done": 3},
        "done": 3,
        "total": 3,
        "cost": 12.0,
        "exit_code": 0,
    }


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    """A real local HTTP server that records the JSON bodies POSTed to it."""
    bodies: list[Any] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_on_finish_url_is_posted_when_the_campaign_pauses(
    tmp_path: Path, simulator: SimProcess, receiver: tuple[str, list[Any]]
) -> None:
    url, bodies = receiver
    jobfile = write_jobfile(
        tmp_path,
        simulator.url,
        ["p", "q", "r"],
        extra=f"budget: {{max_jobs: 1}}\non_finish: {{url: '{url}'}}\n",
    )
    result = run_cli("run", str(jobfile), cwd=tmp_path, timeout=60)
    assert result.returncode == 3, result.stderr
    (summary,) = bodies
    assert summary["outcome"] == "paused" and summary["exit_code"] == 3
    assert "reached its max_jobs of 1" in summary["reason"]
    assert summary["states"] == {"done": 1, "queued": 2}
    assert summary["done"] == 1 and summary["total"] == 3


# -- doctor -------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_doctor_passes_against_the_simulator_with_a_key(
    tmp_path: Path, simulator: SimProcess, style: str
) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, ["a"], style=style)
    result = run_cli("doctor", str(jobfile), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok   database: none yet at")
    assert f"ok   key {KEY_ENV}: set (used by accept)" in lines
    assert any(line.startswith("ok   provider") and "accepts the key" in line for line in lines)
    assert any(line.startswith("ok   disk ") for line in lines)
    assert "test-key-0000" not in result.stdout + result.stderr
    assert not (tmp_path / "runner.db").exists()

    # Without a job file: the providers of every campaign in the database.
    assert run_cli("submit", str(jobfile), cwd=tmp_path).returncode == 0
    from_db = run_cli("doctor", "--db", str(tmp_path / "runner.db"), cwd=tmp_path)
    assert from_db.returncode == 0, from_db.stdout
    assert "schema at the newest revision" in from_db.stdout
    assert f"ok   key {KEY_ENV}" in from_db.stdout


def test_doctor_fails_when_the_key_is_not_set(tmp_path: Path, simulator: SimProcess) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, ["a"])
    env = runner_env()
    del env[KEY_ENV]
    result = run_cli("doctor", str(jobfile), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert f"FAIL key {KEY_ENV}: not set in the environment (used by accept)" in result.stdout


@pytest.mark.sim_config({"api_keys": ["the-right-key"]})
@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_doctor_fails_when_the_provider_refuses_the_key(
    tmp_path: Path, simulator: SimProcess, style: str
) -> None:
    jobfile = write_jobfile(tmp_path, simulator.url, ["a"], style=style)
    wrong = run_cli("doctor", str(jobfile), cwd=tmp_path, env=runner_env(**{KEY_ENV: "wrong"}))
    assert wrong.returncode == 1
    assert f"refuses the key in {KEY_ENV} (HTTP 401)" in wrong.stdout
    assert "wrong" not in wrong.stdout.replace("refuses", "")
    right = run_cli(
        "doctor", str(jobfile), cwd=tmp_path, env=runner_env(**{KEY_ENV: "the-right-key"})
    )
    assert right.returncode == 0, right.stdout


def test_doctor_fails_without_a_database_or_job_file(tmp_path: Path) -> None:
    result = run_cli("doctor", cwd=tmp_path)
    assert result.returncode == 1 and "FAIL database: no runner database at" in result.stdout


@pytest.mark.sim_config({"api_keys": ["the-right-key"]})
@pytest.mark.parametrize("preset", ["deerapi-replicate", "cometapi"])
def test_doctor_checks_an_aggregators_key_on_a_route_it_documents(
    tmp_path: Path, simulator: SimProcess, preset: str
) -> None:
    """DeerAPI and CometAPI document create and get only (the simulator serves no more under
    /replicate): the key is checked by asking for an unknown prediction."""
    provider = (
        f"{{preset: {preset}, base_url: '{simulator.url}/replicate', api_key_env: {KEY_ENV}}}"
    )
    (tmp_path / "j.yaml").write_text(
        f"campaign: agg\nprovider: {provider}\nmodel: black-forest-labs/flux-schnell\n"
        "prompts: [a]\n"
    )
    right = run_cli("doctor", "j.yaml", cwd=tmp_path, env=runner_env(**{KEY_ENV: "the-right-key"}))
    assert right.returncode == 0, right.stdout
    assert "accepts the key" in right.stdout
    wrong = run_cli("doctor", "j.yaml", cwd=tmp_path, env=runner_env(**{KEY_ENV: "wrong"}))
    assert wrong.returncode == 1 and "(HTTP 401)" in wrong.stdout
