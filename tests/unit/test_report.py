"""Report records, the jobs listing, manifest rows and the gallery's HTML, without I/O."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runner.errors import InputError
from runner.report import provenance
from runner.report.export import CSV_FIELDS, csv_row, write_manifest
from runner.report.gallery import (
    CSP,
    SCRIPT,
    STYLE,
    Thumb,
    page_head,
    relative_href,
    render_job,
    write_page,
)
from runner.report.jobs_view import HEADER, format_line, parse_states, write_listing
from runner.report.records import (
    LISTING_FIELDS,
    MANIFEST_FIELDS,
    iso,
    listing_record,
    manifest_record,
    one_line,
    provenance_record,
)
from runner.states import Job, State, on_downloaded

T0 = 1_700_000_000.0
FILE = {"path": "/out/00001-fox.png", "sha256": "ab" * 32, "bytes": 1234, "url": "https://x/s"}


def job(**values: Any) -> Job:
    base: dict[str, Any] = {
        "id": 1,
        "campaign": "c1",
        "key": "fox",
        "index": 1,
        "provider": "bfl",
        "model": "flux-pro-1.1",
        "input": {"prompt": "a fox", "seed": 7, "width": 512},
        "meta": {"prompt": "a fox", "variant": 0, "seed": 7},
        "state": State.DONE,
        "attempts": 1,
        "remote_id": "r-1",
        "files": [FILE],
        "cost": 4.0,
        "created_at": T0,
        "submitted_at": T0 + 2.5,
        "ready_at": T0 + 10.25,
        "finished_at": T0 + 11.0,
        "updated_at": T0 + 11.0,
    }
    return Job(**{**base, **values})


def test_iso_is_utc_with_milliseconds() -> None:
    assert iso(None) is None
    assert iso(T0 + 0.125) == "2023-11-14T22:13:20.125Z"
    assert datetime.fromisoformat(str(iso(T0 + 0.125))).timestamp() == T0 + 0.125
    assert iso(T0 + 0.9996) == "2023-11-14T22:13:20.999Z"  # cut to milliseconds, not rounded
    assert iso(T0) == "2023-11-14T22:13:20.000Z"
    assert iso(0.0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("a fox", 10, "a fox"),
        ("line one\nline two\r\n", 40, "line one line two"),
        ("\x1b[31mred\x1b[0m", 40, "[31mred [0m"),
        ("tab\there\u2028sep", 40, "tab here sep"),
        ("abcdefghijkl", 6, "abcde…"),
        (None, 5, ""),
    ],
)
def test_one_line_removes_control_characters_and_shortens(
    text: str | None, width: int, expected: str
) -> None:
    assert one_line(text, width) == expected
    assert len(one_line(text, width)) <= width


def test_a_listing_line_is_one_line_whatever_the_prompt_and_error() -> None:
    line = format_line(
        job(
            meta={"prompt": "a fox\nin\x1b[2Jsnow " * 10},
            state=State.FAILED,
            error="bad\nthing",
            remote_id=None,
        )
    )
    assert "\n" not in line and "\x1b" not in line
    fields = line.split()
    assert fields[0] == "fox" and "failed" in fields and line.endswith("bad thing")
    assert " - " in line  # no remote id
    assert HEADER.split()[:3] == ["KEY", "PROMPT", "STATE"]


def test_parse_states() -> None:
    assert parse_states(None) is None
    assert parse_states("failed, moderated") == [State.FAILED, State.MODERATED]
    with pytest.raises(InputError, match="uncertain"):
        parse_states("failed,broken")
    with pytest.raises(InputError, match="at least one"):
        parse_states(" , ")


def test_listing_is_written_while_jobs_are_still_being_read() -> None:
    out = io.StringIO()

    def jobs() -> Iterator[Job]:
        for i in range(3):
            # Every earlier job is already written when the next one is read: nothing is
            # collected first (the store reads in batches; memory stays flat).
            assert out.getvalue().count("\n") == i
            yield job(id=i + 1, key=f"k{i}")

    assert write_listing(jobs(), out, as_json=True) == 3
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["key"] for r in records] == ["k0", "k1", "k2"]
    assert tuple(records[0]) == LISTING_FIELDS


def test_listing_record_fields() -> None:
    record = listing_record(job(error="x"))
    assert record == {
        "campaign": "c1",
        "key": "fox",
        "index": 1,
        "prompt": "a fox",
        "model": "flux-pro-1.1",
        "state": "done",
        "attempts": 1,
        "remote_id": "r-1",
        "error": "x",
        "files": ["/out/00001-fox.png"],
        "updated_at": iso(T0 + 11.0),
    }


def test_manifest_record_has_timings_files_and_no_signed_url() -> None:
    record = manifest_record(job())
    assert tuple(record) == MANIFEST_FIELDS
    assert record["files"] == [{"path": FILE["path"], "sha256": FILE["sha256"], "bytes": 1234}]
    assert (record["queue_seconds"], record["generation_seconds"]) == (2.5, 7.75)
    assert (record["download_seconds"], record["total_seconds"]) == (0.75, 11.0)
    assert record["seed"] == 7 and record["input"]["width"] == 512
    assert "https://x/s" not in json.dumps(record)

    failed = manifest_record(
        job(state=State.FAILED, files=[], ready_at=None, error="nope", meta={"prompt": "p"})
    )
    assert failed["download_seconds"] is None and failed["generation_seconds"] is None
    assert failed["seed"] == 7  # from the input when the meta has none
    assert failed["error"] == "nope" and failed["files"] == []


def test_csv_rows_flatten_input_and_files() -> None:
    two = job(files=[FILE, {**FILE, "path": "/out/b.png", "sha256": "cd" * 32}])
    row = csv_row(manifest_record(two))
    assert tuple(row) == CSV_FIELDS
    assert json.loads(row["input"]) == two.input
    assert row["paths"] == "/out/00001-fox.png\n/out/b.png"
    assert row["sha256"] == "ab" * 32 + "\n" + "cd" * 32
    assert row["error"] == "" and row["reused_from"] == "" and row["cost"] == "4.0"
    with pytest.raises(ValueError, match="unknown manifest format"):
        write_manifest([], io.StringIO(), "xml")


def test_provenance_record() -> None:
    record = provenance_record(job(meta={"prompt": "a fox", "id": "fox", "seed": 7}), FILE, 1)
    assert record["format"] == "runner-provenance/1" and record["runner_version"]
    assert (record["prompt"], record["seed"], record["id"]) == ("a fox", 7, "fox")
    assert record["image"] == {"n": 1, "of": 1, "sha256": FILE["sha256"], "bytes": 1234}
    assert record["created_at"] == iso(T0)
    assert provenance.sidecar_path("/out/a.png") == Path("/out/a.png.json")


def test_after_download_writes_the_done_job_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    running = job(state=State.DOWNLOADING, files=[], finished_at=None)
    change = on_downloaded(running, [FILE], T0 + 20)
    seen: list[Job] = []
    monkeypatch.setattr(
        provenance, "write_job_sidecars", lambda job, just_saved=False: seen.append(job)
    )
    provenance.after_download(running, change)
    (done,) = seen
    assert done.state is State.DONE and done.files == [FILE] and done.finished_at == T0 + 20

    def broken(_job: Job, just_saved: bool = False) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(provenance, "write_job_sidecars", broken)
    provenance.after_download(running, change)  # logged, not raised: the image is paid for
    assert "disk full" in caplog.text and "runner export c1 --sidecars" in caplog.text


EVIL = '<script>alert(1)</script> " onmouseover="alert(2)" \' & <img src=x onerror=alert(3)>'


def no_thumbnail(_path: Path) -> Thumb | None:
    return Thumb("data:image/jpeg;base64,AAAA", 10, 10)


def test_cards_escape_every_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "is_file", lambda self: True)
    cards = render_job(
        job(meta={"prompt": EVIL}, key="k<1>", model='m"x'), Path("/out"), no_thumbnail
    ) + render_job(job(state=State.FAILED, error=EVIL, files=[]), Path("/out"), no_thumbnail)
    assert "<script" not in cards and "<img src=x" not in cards
    assert '" onmouseover' not in cards and "' &" not in cards
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in cards
    assert 'data-key="k&lt;1&gt;"' in cards and "m&quot;x" in cards
    head = page_head("<b>camp</b>", {"done": 1, "failed": 1}, T0)
    assert "<b>camp" not in head and "&lt;b&gt;camp&lt;/b&gt;" in head


def test_the_policy_allows_exactly_the_page_own_style_and_script() -> None:
    out = io.StringIO()
    write_page([], out, campaign="c", counts={}, page_dir=Path("/out"), generated=T0)
    html = out.getvalue()
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert style and style.group(1) == STYLE and script and script.group(1) == SCRIPT
    for text in (STYLE, SCRIPT):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in CSP
    assert "default-src 'none'" in CSP and "img-src data:" in CSP
    assert html.count("<script") == 1 and "http://" not in html and "https://" not in html


def test_unfinished_and_missing_files_get_cards_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    running = render_job(job(state=State.RUNNING, files=[]), Path("/out"), no_thumbnail)
    assert 'data-state="running"' in running and "not finished yet (running)" in running
    monkeypatch.setattr(Path, "is_file", lambda self: False)
    missing = render_job(job(), Path("/out"), no_thumbnail)
    assert "file not found: 00001-fox.png" in missing and "<img" not in missing


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/out/00001-fox.png", "00001-fox.png"),
        ("/out/a b#c?.png", "a%20b%23c%3F.png"),
        ("/out/javascript:alert(1).png", "javascript%3Aalert%281%29.png"),
        ("/elsewhere/x.png", "../elsewhere/x.png"),
    ],
)
def test_links_are_relative_and_never_another_scheme(target: str, expected: str) -> None:
    assert relative_href(Path(target), Path("/out")) == expected
