"""A campaign's finished images, found again by their provenance sidecars.

Beside every image runner saves is `<image>.json` (`runner.report.provenance`): campaign, job
key, model, prediction id, the image's sha256. So a database that lost a campaign's jobs (its
tables dropped, its `-wal` file deleted, an old backup restored) is not the only record of
what was bought:

- `first_sidecar` finds whether the output folder holds any image of the campaign: a campaign
  the database has no job of, whose images are on disk, is not queued to be bought again;
- `proven_done` tells which jobs of a job file their sidecars prove done (every image there,
  each with the sha256 its sidecar records), for `runner submit JOBFILE --from-sidecars`.

Reading a folder is the only I/O here; the rest are pure functions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from runner.campaign import Campaign
from runner.report.provenance import SIDECAR_SUFFIX
from runner.report.records import PROVENANCE_FORMAT

MAX_SIDECAR = 1024 * 1024  # bytes; a larger .json beside an image is not one of runner's
HEAD_BYTES = 512  # where a sidecar names its campaign


@dataclass(frozen=True)
class Sidecar:
    path: Path  # the sidecar itself
    campaign: str
    key: str
    model: str
    remote_id: str | None
    n: int  # this image is the n-th of `of`
    of: int
    sha256: str
    bytes: int
    created_at: float | None
    submitted_at: float | None
    ready_at: float | None
    finished_at: float | None

    @property
    def image(self) -> Path:
        return self.path.with_name(self.path.name.removesuffix(SIDECAR_SUFFIX))


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse(data: bytes, path: Path) -> Sidecar | None:
    """The sidecar in `data`; None for any other .json file."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("format") != PROVENANCE_FORMAT:
        return None
    image = record.get("image")
    if not isinstance(image, dict):
        return None
    fields = (record.get("campaign"), record.get("key"), record.get("model"), image.get("sha256"))
    if not all(isinstance(f, str) for f in fields):
        return None
    n, of, size = image.get("n"), image.get("of"), image.get("bytes")
    if not (isinstance(n, int) and isinstance(of, int) and isinstance(size, int)):
        return None
    remote_id = record.get("remote_id")
    return Sidecar(
        path=path,
        campaign=record["campaign"],
        key=record["key"],
        model=record["model"],
        remote_id=remote_id if isinstance(remote_id, str) else None,
        n=n,
        of=of,
        sha256=image["sha256"],
        bytes=size,
        created_at=_epoch(record.get("created_at")),
        submitted_at=_epoch(record.get("submitted_at")),
        ready_at=_epoch(record.get("ready_at")),
        finished_at=_epoch(record.get("finished_at")),
    )


def sidecars(folder: Path, campaign: str) -> Iterator[Sidecar]:
    """The campaign's sidecars under `folder` (file names may hold subfolders)."""
    if not folder.is_dir():
        return
    # A folder may hold other campaigns' images too: their sidecars name their campaign near
    # the top, so most are passed over after reading their first bytes.
    marker = b'"campaign": ' + orjson.dumps(campaign)
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.endswith(SIDECAR_SUFFIX) or name.startswith("."):
                continue
            path = Path(root) / name
            try:
                with path.open("rb") as fh:
                    head = fh.read(HEAD_BYTES)
                    if marker not in head:
                        continue
                    data = head + fh.read(MAX_SIDECAR)
            except OSError:
                continue
            if len(data) > MAX_SIDECAR:
                continue
            found = parse(data, path)
            if found is not None and found.campaign == campaign:
                yield found


def first_sidecar(folder: Path, campaign: str) -> Sidecar | None:
    return next(sidecars(folder, campaign), None)


def sha256_of(path: Path) -> str | None:
    """The file's sha256; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def proven_done(
    campaign: Campaign,
    found: Iterable[Sidecar],
    hash_of: Callable[[Path], str | None] = sha256_of,
) -> dict[str, dict[str, Any]]:
    """The jobs of `campaign` its sidecars prove done: key -> the values to record (files,
    remote id, times). A job counts only with every one of its images, each on disk with the
    sha256 its sidecar records, and of the job's model."""
    models = {spec.key: spec.model for spec in campaign.jobs}
    by_key: dict[str, dict[int, Sidecar]] = {}
    for sidecar in found:
        if models.get(sidecar.key) == sidecar.model and 1 <= sidecar.n <= sidecar.of:
            by_key.setdefault(sidecar.key, {})[sidecar.n] = sidecar
    done: dict[str, dict[str, Any]] = {}
    for key, images in by_key.items():
        of = max(s.of for s in images.values())
        if sorted(images) != list(range(1, of + 1)):
            continue
        ordered = [images[n] for n in range(1, of + 1)]
        if any(hash_of(s.image) != s.sha256 for s in ordered):
            continue
        first = ordered[0]
        done[key] = {
            "remote_id": first.remote_id,
            "files": [
                {"path": str(s.image), "sha256": s.sha256, "bytes": s.bytes, "url": None}
                for s in ordered
            ],
            "created_at": first.created_at,
            "submitted_at": first.submitted_at,
            "ready_at": first.ready_at,
            "finished_at": first.finished_at,
        }
    return done


def lost_campaign(name: str, where: str, sidecar: Sidecar, jobfile: str) -> str:
    """The paragraph for a campaign the database has no job of, whose images are on disk."""
    return (
        f"the database at {where} has no job of campaign {name!r}, but its output folder "
        f"{sidecar.path.parent} holds images of that campaign with their .json sidecars (for "
        f"example {sidecar.path.name}). Submitting it now would queue every job to be bought "
        "again, so nothing was changed. If the database lost them (a deleted -wal file, "
        f"dropped tables, an older backup), `runner submit {jobfile} --from-sidecars` records "
        "each job whose images and sidecars are there as done (their sha256 checked) and "
        "queues only the others; if this is another campaign that took the same name, give "
        "it a name (`campaign:`) or an output folder (`output.dir`) of its own."
    )
