"""A webhook receiver that cannot starve the worker of file descriptors.

`runner run --webhook-listen` runs as a subprocess under a low limit of open files (prlimit),
against the simulator in another subprocess sending real signed webhooks to it. As soon as the
receiver listens, this test opens 10,000 connections to it and holds them: half send nothing,
half half a request line. The campaign must still end with every job done and every file on
disk, nothing in the log about running out of descriptors, and the runner's open descriptors
(sampled from /proc) below its limit all along.
"""

from __future__ import annotations

import hashlib
import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.acceptance.conftest import (
    SimProcess,
    db_rows,
    runner_env,
    start_simulator,
    stop_simulator,
    write_jobfile,
)
from tests.reliability.flood import Peak, flooding

IDLE = 10_000
JOBS = 300
LIMITS = "limits: {max_in_flight: 48, creates_per_minute: 100000}\n"
SIM = {"duration_median": 1.0, "duration_sigma": 0.3, "webhook_mode": "valid", "seed": 5}
OUT_OF_DESCRIPTORS = re.compile(r"EMFILE|ENFILE|Too many open files|too many open files")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="prlimit and /proc are Linux's")


@pytest.fixture(autouse=True)
def _room_for_the_flood() -> None:
    """This process opens the 10,000 client sockets: its own soft limit goes to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 1000:
        pytest.skip(f"the hard limit of open files ({hard}) leaves no room for {IDLE} clients")
    if soft != resource.RLIM_INFINITY and soft < IDLE + 1000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimProcess]:
    sim = start_simulator(tmp_path, SIM)
    yield sim
    stop_simulator(sim)


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def soft_limit(pid: int) -> int:
    """The soft limit of open files of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no limit of open files in /proc")


@dataclass
class Runner:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def seen(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"no {text!r} in the runner's output:\n{self.output()}")
            time.sleep(0.02)

    def first(self, text: str) -> str:
        return next(line for line in list(self.lines) if text in line)

    def output(self) -> str:
        return "\n".join(self.lines[-80:])


@contextmanager
def running(folder: Path, nofile: str, port: int) -> Iterator[Runner]:
    """`runner run` with the webhook receiver on `port`, under `prlimit --nofile=SOFT:HARD`."""
    url = f"http://127.0.0.1:{port}"
    command = [
        *("prlimit", f"--nofile={nofile}", "--"),
        *(sys.executable, "-m", "runner", "run", "jobs.yaml", "--db", str(folder / "runner.db")),
        *("--webhook-listen", f"127.0.0.1:{port}", "--webhook-url", url),
    ]
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = Runner(process)
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


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("nofile", "cap"),
    [
        ("1024:4096", 512),  # a soft limit the worker may raise: the receiver's largest share
        ("1024:1024", 255),  # one it may not: 1024 less the worker's 685, less two backlogs
    ],
)
def test_ten_thousand_idle_connections_to_the_receiver_starve_no_download(
    tmp_path: Path, simulator: SimProcess, nofile: str, cap: int
) -> None:
    prompts = [f"a quiet harbour number {i}" for i in range(JOBS)]
    write_jobfile(tmp_path, simulator.url, prompts, style="replicate", extra=LIMITS)
    port = free_port()
    with running(tmp_path, nofile, port) as run, flooding("127.0.0.1", port) as flood:
        run.seen("webhooks: listening on", 60)
        assert run.first("webhooks: listening on").find(f"(at most {cap} connections") > 0
        raised = soft_limit(run.process.pid)
        assert raised == int(nofile.split(":")[1])  # raised to the hard limit where it may
        peak = Peak(run.process.pid)
        began = time.monotonic()
        flood.open(IDLE // 2)
        flood.open(IDLE - IDLE // 2, payload=b"POST /webhooks/repl")
        opened = time.monotonic() - began
        try:
            code = run.process.wait(timeout=150)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the run did not finish:\n{run.output()}") from None
        ended = time.monotonic()
        took = ended - began
        most = peak.stop()
        connected = len(flood.connected())
        # closed by the runner while it ran (at its exit, every one is)
        cut = [c for c in flood.closed_by_server() if c.closed is not None and c.closed < ended]
    sim = simulator.stats()
    print(
        f"\nnofile {nofile}: {IDLE} connections opened in {opened:.1f} s ({connected} "
        f"connected, {len(cut)} closed by the runner, connect errors {flood.errors}); run "
        f"took {took:.1f} s; peak open descriptors {most} of {raised}; webhook answers "
        f"{sim['webhook_answers']}"
    )
    assert code == 0, run.output()
    assert not [ln for ln in run.lines if OUT_OF_DESCRIPTORS.search(ln)], run.output()
    rows = db_rows(tmp_path / "runner.db")
    assert len(rows) == JOBS
    assert {row["state"] for row in rows} == {"done"}, [
        (row["key"], row["state"], row["error"]) for row in rows if row["state"] != "done"
    ]
    for row in rows:
        (record,) = json.loads(row["files"])
        path = Path(record["path"])
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    assert len(sim["generations"]) == JOBS  # nothing created twice
    assert most < raised, (most, raised)
    # the receiver closes the connections that owe a request to make room for new ones, so a
    # sender that sends its request at once gets through (before: 118 of 300)
    assert sim["webhook_answers"].get("204", 0) >= JOBS // 2, sim["webhook_answers"]
