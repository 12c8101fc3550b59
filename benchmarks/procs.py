"""Subprocesses the harness starts: the provider simulator, and measured commands.

A measured command is reaped with `os.wait4`, which returns that one child's own resource
usage: its CPU seconds and peak RSS are the contender's alone, not the harness's nor the
simulator's. Every wait here has a time limit; a command past its limit is interrupted, then
killed, and reported as such rather than hanging the benchmark.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PYTHON = sys.executable
# the repository root: `python -m benchmarks...` and `python -m runner` both work from here
ROOT = Path(__file__).resolve().parent.parent
_REAP_POLL = 0.02


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any RUNNER_* or provider key settings, plus `extra`.

    Nor PYTHONDONTWRITEBYTECODE: a user's Python keeps the compiled modules it imports, and a
    measured command that compiled the runner's sources anew at every start (0.2 s here) would
    not be what a user runs."""
    dropped = ("RUNNER_", "REPLICATE_", "BFL_", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass(frozen=True)
class Measured:
    """How a measured command ended and what it used."""

    returncode: int
    wall_seconds: float
    cpu_seconds: float  # user + system, of the child process itself
    peak_rss_kib: int  # ru_maxrss: KiB on Linux
    timed_out: bool
    interrupted: bool  # SIGINT was sent on purpose (interrupt_after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "returncode": self.returncode,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "peak_rss_mb": self.peak_rss_kib / 1024,
            "timed_out": self.timed_out,
            "interrupted": self.interrupted,
        }


def run_measured(
    args: Sequence[str],
    *,
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    interrupt_after: float | None = None,
) -> Measured:
    """Run a command to its end (output to `log`), reaping it with wait4 for its own usage.

    With `interrupt_after`, SIGINT is sent that many seconds in (runner's graceful stop), and
    SIGINT again 10 s later. Past `timeout` the command gets SIGTERM, then SIGKILL 5 s later.
    """
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            list(args), cwd=cwd, env=env or clean_env(), stdout=out, stderr=subprocess.STDOUT
        )
    interrupts = 0
    next_interrupt = interrupt_after
    timed_out = False
    killed_at: float | None = None
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        elapsed = time.monotonic() - started
        if next_interrupt is not None and elapsed >= next_interrupt and interrupts < 2:
            process.send_signal(signal.SIGINT)
            interrupts += 1
            next_interrupt += 10.0
        if elapsed >= timeout and not timed_out:
            timed_out = True
            process.terminate()
            killed_at = time.monotonic()
        if killed_at is not None and time.monotonic() - killed_at > 5.0:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(_REAP_POLL)
    wall = time.monotonic() - started
    # the Popen object must not try to reap the pid again
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=process.returncode,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_kib=usage.ru_maxrss,
        timed_out=timed_out,
        interrupted=interrupts > 0,
    )


class SimulatorProcess:
    """`runner simulate --port 0 --config FILE` in its own process, for one contender's run."""

    def __init__(self, config: dict[str, Any], workdir: Path, *, start_timeout: float = 30.0):
        workdir.mkdir(parents=True, exist_ok=True)
        config_file = workdir / "sim.json"
        config_file.write_text(json.dumps(config, indent=2))
        self._log = (workdir / "sim.log").open("wb")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "runner", "simulate", "--port", "0", "--config", str(config_file)],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        try:
            self.url = self._read_url(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _read_url(self, timeout: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        buffer = b""
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the simulator did not start within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"the simulator exited while starting: {buffer!r}")
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        if "listening on" not in line:
            raise RuntimeError(f"unexpected first line from the simulator: {line!r}")
        return line.rsplit(" ", 1)[-1].strip()

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_sim/stats", timeout=60)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
