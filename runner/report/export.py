"""`runner export`: a manifest of a campaign, one record per job, as JSON lines or CSV.

Records are written as they are read from the store, so a campaign of any size exports in
constant memory. JSON lines keep every value's type (`input` and `files` as JSON); CSV flattens:
`input` and `reused_from` as JSON text, `files` as two columns, `paths` and `sha256`, each with
one value per line of the cell (most jobs have one file), and an empty cell for no value.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

from runner.report.records import MANIFEST_FIELDS, manifest_record
from runner.states import Job

FORMATS = ("jsonl", "csv")

CSV_FIELDS: tuple[str, ...] = tuple(
    name
    for field in MANIFEST_FIELDS
    for name in (("paths", "sha256") if field == "files" else (field,))
)


def csv_row(record: dict[str, Any]) -> dict[str, str]:
    """A manifest record as CSV cells."""
    row: dict[str, str] = {}
    for name in CSV_FIELDS:
        if name == "paths":
            row[name] = "\n".join(str(f["path"]) for f in record["files"])
        elif name == "sha256":
            row[name] = "\n".join(str(f["sha256"]) for f in record["files"])
        else:
            value = record[name]
            if value is None:
                row[name] = ""
            elif isinstance(value, dict | list):
                row[name] = json.dumps(value, ensure_ascii=False, sort_keys=True)
            else:
                row[name] = str(value)
    return row


def write_manifest(jobs: Iterable[Job], out: TextIO, fmt: str) -> int:
    """Write one record per job to `out` (opened with newline="" for CSV); return the count."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown manifest format {fmt!r}; use one of {', '.join(FORMATS)}")
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for job in jobs:
            writer.writerow(csv_row(manifest_record(job)))
            count += 1
    else:
        for job in jobs:
            out.write(json.dumps(manifest_record(job), ensure_ascii=False) + "\n")
            count += 1
    out.flush()
    return count
