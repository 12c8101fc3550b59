"""Provenance beside every image: `<image>.json`, a record of what made it.

A sidecar, not a PNG text chunk: the image on disk stays byte for byte what the provider
served, so the sha256 in the database (and in the sidecar) is the provider's file, and the
same scheme covers JPEG and WebP. The worker writes the sidecars of a job after its files are
saved and before the job is marked done; each is written atomically (temporary file, fsync,
rename). A crash between image and sidecar leaves the job `downloading`, so the next run fetches
it again (the identical file on disk is kept) and writes the sidecar then.
`runner export CAMPAIGN --sidecars` (re)writes them for every done job, for example after
images were copied in by `reuse`.

Writing a sidecar never fails a job: the image is what was paid for. A sidecar that cannot be
written is logged with the command that writes it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import jsontext
from runner.report.files import write_bytes_atomically
from runner.report.records import provenance_record
from runner.states import Change, Job, State, applied

log = logging.getLogger("runner.report")

SIDECAR_SUFFIX = ".json"


def sidecar_path(image: str | Path) -> Path:
    """`out/00001-fox.png` -> `out/00001-fox.png.json`."""
    path = Path(image)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sidecar_bytes(record: dict[str, Any]) -> bytes:
    return jsontext.dumps_indented(record)


@dataclass
class SidecarReport:
    written: int = 0  # created or changed
    unchanged: int = 0  # already held exactly this record
    missing: int = 0  # the image itself is not on disk

    def add(self, other: SidecarReport) -> None:
        self.written += other.written
        self.unchanged += other.unchanged
        self.missing += other.missing


def write_job_sidecars(job: Job, *, just_saved: bool = False) -> SidecarReport:
    """Write (or refresh) the sidecar of every file of a done job. Raises OSError.

    `just_saved`: the images were saved a moment ago (by the worker), so they are not looked
    for, and their sidecars are written without reading what is there first."""
    report = SidecarReport()
    for n, file in enumerate(job.files, start=1):
        image = Path(str(file.get("path")))
        if not just_saved and not image.is_file():
            report.missing += 1
            continue
        record = sidecar_bytes(provenance_record(job, file, n))
        if write_bytes_atomically(sidecar_path(image), record, unless_same=not just_saved):
            report.written += 1
        else:
            report.unchanged += 1
    return report


def write_all_sidecars(jobs: Iterable[Job]) -> SidecarReport:
    """`runner export --sidecars`: the sidecars of every done job given."""
    total = SidecarReport()
    for job in jobs:
        if job.state is State.DONE:
            total.add(write_job_sidecars(job))
    return total


def after_download(job: Job, change: Change) -> None:
    """The worker's hook: the files of `job` are saved and `change` (to done) is about to be
    written. Writes their sidecars from the job as it will be recorded; never raises."""
    if change.to is not State.DONE:
        return
    try:
        write_job_sidecars(applied(job, change), just_saved=True)
    except Exception as error:  # provenance must never cost a paid-for image its `done`
        log.warning(
            "job %s: could not write its provenance sidecar (%s); `runner export %s --sidecars` "
            "writes it again",
            job.key,
            error,
            job.campaign,
        )
