"""The records the reports are made of, built from job snapshots. No I/O.

Three shapes, each documented in the README and kept stable (fields are only ever added):
`listing_record` (`runner jobs --json`), `manifest_record` (`runner export`) and
`provenance_record` (the `<image>.json` sidecar beside every image).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from runner.states import Job

PROVENANCE_FORMAT = "runner-provenance/1"

LISTING_FIELDS: tuple[str, ...] = (
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
)

MANIFEST_FIELDS: tuple[str, ...] = (
    "campaign",
    "key",
    "index",
    "prompt",
    "input",
    "seed",
    "variant",
    "provider",
    "model",
    "remote_id",
    "state",
    "attempts",
    "files",
    "created_at",
    "submitted_at",
    "ready_at",
    "finished_at",
    "queue_seconds",
    "generation_seconds",
    "download_seconds",
    "total_seconds",
    "cost",
    "error",
    "reused_from",
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


@functools.cache
def runner_version() -> str:
    try:
        return metadata.version("runner")
    except metadata.PackageNotFoundError:
        return "unknown"


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with milliseconds (`2025-01-31T12:00:00.125Z`)."""
    if ts is None:
        return None
    # isoformat truncates to milliseconds, as `microsecond // 1000` did, in 60% of strftime's time
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def seconds_between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


def prompt_of(job: Job) -> str:
    value = job.meta.get("prompt")
    if value is None:
        value = job.input.get("prompt", "")
    return str(value)


def seed_of(job: Job) -> Any:
    """The seed sent (the job file's); None when the provider picked one."""
    seed = job.meta.get("seed")
    return job.input.get("seed") if seed is None else seed


def one_line(text: str | None, width: int) -> str:
    """Text made safe for one terminal line: control characters (escape sequences, newlines)
    become spaces, runs of space one space; cut to `width` characters with an ellipsis."""
    if not text:
        return ""
    flat = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(flat) > width:
        return flat[: max(0, width - 1)].rstrip() + "…"
    return flat


def file_entries(job: Job) -> list[dict[str, Any]]:
    """The job's files as {path, sha256, bytes} (the signed URL they came from is left out)."""
    return [
        {"path": f.get("path"), "sha256": f.get("sha256"), "bytes": f.get("bytes")}
        for f in job.files
    ]


def listing_record(job: Job) -> dict[str, Any]:
    """One object of `runner jobs --json`."""
    return {
        "campaign": job.campaign,
        "key": job.key,
        "index": job.index,
        "prompt": prompt_of(job),
        "model": job.model,
        "state": job.state.value,
        "attempts": job.attempts,
        "remote_id": job.remote_id,
        "error": job.error,
        "files": [f.get("path") for f in job.files],
        "updated_at": iso(job.updated_at),
    }


def _made_how(job: Job) -> dict[str, Any]:
    """What was asked, of whom: shared by the manifest and the sidecar."""
    return {
        "campaign": job.campaign,
        "key": job.key,
        "index": job.index,
        "prompt": prompt_of(job),
        "input": job.input,
        "seed": seed_of(job),
        "variant": job.meta.get("variant"),
        "provider": job.provider,
        "model": job.model,
        "remote_id": job.remote_id,
    }


def _when(job: Job) -> dict[str, Any]:
    return {
        "created_at": iso(job.created_at),
        "submitted_at": iso(job.submitted_at),
        "ready_at": iso(job.ready_at),
        "finished_at": iso(job.finished_at),
    }


def manifest_record(job: Job) -> dict[str, Any]:
    """One record of `runner export`: what was asked, what came back, when, and at what cost."""
    done = job.finished_at if job.files else None
    return {
        **_made_how(job),
        "state": job.state.value,
        "attempts": job.attempts,
        "files": file_entries(job),
        **_when(job),
        "queue_seconds": seconds_between(job.created_at, job.submitted_at),
        "generation_seconds": seconds_between(job.submitted_at, job.ready_at),
        "download_seconds": seconds_between(job.ready_at, done),
        "total_seconds": seconds_between(job.created_at, job.finished_at),
        "cost": job.cost,
        "error": job.error,
        "reused_from": job.meta.get("reused_from"),
    }


def provenance_record(job: Job, file: dict[str, Any], n: int) -> dict[str, Any]:
    """The sidecar of image `n` (1-based) of a done job: everything needed to make it again."""
    record: dict[str, Any] = {
        "format": PROVENANCE_FORMAT,
        "runner_version": runner_version(),
        **_made_how(job),
        **_when(job),
        "image": {
            "n": n,
            "of": len(job.files),
            "sha256": file.get("sha256"),
            "bytes": file.get("bytes"),
        },
    }
    for extra in ("id", "vars", "image", "reused_from"):
        if job.meta.get(extra) is not None:
            record[f"source_{extra}" if extra == "image" else extra] = job.meta[extra]
    return record
