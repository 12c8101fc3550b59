"""The download module's small pieces, without a network: URL checks, temporary names, disk
errors. The downloads themselves are tested over sockets in tests/reliability."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runner.worker.download import (
    DownloadError,
    check_url,
    device_of,
    disk_error_message,
    sweep_stale_temps,
    temp_prefix,
)


@pytest.mark.parametrize("url", ["http://h/x.png", "https://h/x.png", "HTTPS://h/x.png"])
def test_http_and_https_urls_pass(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/x", "data:,x", "x.png", ""])
def test_other_urls_are_refused_as_gone(url: str) -> None:
    with pytest.raises(DownloadError) as info:
        check_url(url)
    assert info.value.gone and "only http and https" in str(info.value)


@pytest.mark.parametrize("tag", ["c1.k1.1", "../../x", "a/b\\c", "n\0l", "x" * 500, ""])
def test_a_temporary_name_is_one_hidden_name_and_is_swept_by_its_pid(
    tmp_path: Path, tag: str
) -> None:
    name = f"{temp_prefix(tag)}{os.getpid() + 10**6}.0a1b2c3d.part"
    assert "/" not in name and "\\" not in name and "\0" not in name and name.startswith(".")
    assert len(name.encode()) < 255
    (tmp_path / name).write_bytes(b"partial")
    assert sweep_stale_temps(tmp_path, lambda pid: pid == os.getpid() + 10**6) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_live_writers_temporary_file_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / f"{temp_prefix('c.k.1')}{os.getpid()}.00000000.part").write_bytes(b"x")
    assert sweep_stale_temps(tmp_path, lambda pid: False) == 0
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "the disk is full (ENOSPC"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EMFILE, "this process has too many open files (EMFILE)"),
        (errno.ENFILE, "the system has too many open files (ENFILE)"),
        (errno.EIO, "EIO"),
    ],
)
def test_disk_errors_name_the_folder_and_the_condition(code: int, words: str) -> None:
    message = disk_error_message(OSError(code, os.strerror(code)), Path("/data/out"))
    assert words in message and "/data/out" in message and "tried again" in message


def test_a_folder_not_made_yet_is_on_its_nearest_existing_parents_file_system(
    tmp_path: Path,
) -> None:
    assert device_of(tmp_path / "not" / "made" / "yet") == os.stat(tmp_path).st_dev
    assert device_of(Path("relative/not/made")) == os.stat(".").st_dev
