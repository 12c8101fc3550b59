"""What the user-code contenders share: their command line, per-job records and the report.

The report is the contract with the harness: when the first create was sent, and for every
job its prediction id, when the client saw it finished and when its file was on disk.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JobRecord:
    index: int
    remote_id: str | None = None
    detected_at: float | None = None  # epoch seconds: the answer saying "finished" arrived
    on_disk_at: float | None = None  # epoch seconds: the file was written and closed
    error: str | None = None


@dataclass
class Report:
    contender: str
    started_at: float = 0.0  # epoch seconds, just before the first create
    ended_at: float = 0.0
    http_429_seen: int = 0  # 429 answers this code saw itself (not the client's hidden retries)
    transport_errors: int = 0  # connection errors and timeouts this code saw and retried
    jobs: list[JobRecord] = field(default_factory=list)

    def write(self, path: Path) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        data: dict[str, Any] = asdict(self)
        data["self_cpu_seconds"] = usage.ru_utime + usage.ru_stime
        data["self_peak_rss_kib"] = usage.ru_maxrss
        path.write_text(json.dumps(data))


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", required=True, help="the simulator's URL")
    parser.add_argument("--prompts", type=Path, required=True, help="JSON list of prompts")
    parser.add_argument("--input", default="{}", help="JSON object sent with every prompt")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, required=True, help="semaphore size")
    parser.add_argument("--poll-interval", type=float, required=True, help="seconds")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplies user waits")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="seconds per job")
    parser.add_argument("--out", type=Path, required=True, help="folder for the images")
    parser.add_argument("--report", type=Path, required=True, help="JSON report to write")
    return parser.parse_args()


def load_prompts(path: Path) -> list[str]:
    prompts = json.loads(path.read_text())
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise SystemExit(f"{path}: expected a JSON list of strings")
    return prompts


def now() -> float:
    return time.time()


# How a user's loop retries: at most this many tries of one step on a connection error, and an
# exponential backoff of 1, 2, 4, 8 s (real time), capped at 10 s, between tries.
MAX_TRANSPORT_TRIES = 5


def user_backoff(attempt: int, time_scale: float) -> float:
    """Seconds to sleep before try number `attempt + 1` (attempt >= 1), in simulator time."""
    return min(10.0, 2.0 ** (attempt - 1)) * time_scale
