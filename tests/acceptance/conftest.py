"""The `runner` CLI as a subprocess against a simulator subprocess, over real sockets.

The simulator runs in its own process so its counters (creates per input, files served)
survive the runner being killed and restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY_ENV = "RUNNER_TEST_KEY"


@dataclass
class SimProcess:
    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_sim/stats", timeout=10).json()

    def configure(self, **config: Any) -> None:
        httpx.post(f"{self.url}/_sim/config", json=config, timeout=10).raise_for_status()


def start_simulator(tmp_path: Path, config: dict[str, Any]) -> SimProcess:
    cfg = tmp_path / "sim.json"
    cfg.write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "simulate", "--port", "0", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the server listens (or the process dies)
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return SimProcess(url=line.rsplit(" ", 1)[-1].strip(), process=process)


@pytest.fixture
def simulator(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SimProcess]:
    marker = request.node.get_closest_marker("sim_config")
    config = {"duration_median": 0.3, "duration_sigma": 0.2}
    if marker is not None:
        config.update(marker.args[0])
    sim = start_simulator(tmp_path, config)
    yield sim
    stop_simulator(sim)


def stop_simulator(sim: SimProcess) -> None:
    """SIGTERM, as a user stops `runner simulate`; SIGKILL if it does not end in 10 s."""
    sim.process.send_signal(signal.SIGTERM)
    try:
        sim.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sim.process.kill()
        sim.process.wait()
    if sim.process.stdout is not None:
        sim.process.stdout.close()


def runner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update({KEY_ENV: "test-key-0000", "RUNNER_TIME_SCALE": "0.05", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env or runner_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_runner_processes() -> Iterator[None]:
    """Whatever a test asserted, no runner process it started outlives it."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env or runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _STARTED.append(process)
    return process


def db_rows(db: Path, sql: str = "SELECT * FROM jobs") -> list[sqlite3.Row]:
    """Rows of a database another process is writing; none while it does not exist yet."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # created, not migrated yet
            raise


def write_jobfile(
    folder: Path,
    sim_url: str,
    prompts: list[str],
    *,
    style: str = "bfl",
    name: str = "accept",
    extra: str = "",
    provider_extra: str = "",
) -> Path:
    """A job file whose provider is the simulator (base_url override), prompts in a .txt file."""
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    if style == "bfl":
        provider = f"{{preset: bfl, base_url: '{sim_url}', api_key_env: {KEY_ENV}{provider_extra}}}"
        model = "flux-pro-1.1"
        inp = "{width: 256, height: 256, output_format: png}"
    else:
        provider = (
            f"{{preset: replicate, base_url: '{sim_url}', api_key_env: {KEY_ENV}{provider_extra}}}"
        )
        model = "black-forest-labs/flux-schnell"
        inp = "{output_format: png}"
    text = (
        f"campaign: {name}\nprovider: {provider}\nmodel: {model}\ninput: {inp}\n"
        "prompts_file: prompts.txt\noutput: {dir: out}\n" + extra
    )
    path = folder / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
