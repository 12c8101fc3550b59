"""A full disk: the download fails saying so, leaves nothing behind, and succeeds once there
is room again, both at the `download()` level and through the worker.

The output folder is put on a real small file system: a 1 MiB tmpfs, or a loop-mounted ext4
image of 2 MiB. Mounting needs root and a kernel that lets this process mount (a container may
not); a kind that cannot be mounted here is skipped with the reason, except on CI (`CI` set),
where it is a failure: CI runs as root on purpose, and a full disk left untested is a hole.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import anyio
import pytest

from runner import app
from runner.campaign import ProviderConfig
from runner.store import Store
from runner.worker.pool import PoolOptions
from tests.factories import campaign
from tests.reliability.test_paths_and_downloads import (
    FileHost,
    entries,
    fetch,
    files_of,
    host,
    key_env,
    refused,
    store,
)

__all__ = ["host", "key_env", "store"]  # fixtures shared with test_paths_and_downloads


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def _mount_tmpfs(mount_point: Path, _work: Path) -> str | None:
    """None when mounted, else why not."""
    done = _run("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point))
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


def _mount_loop_ext4(mount_point: Path, work: Path) -> str | None:
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed"
    image = work / "small.img"
    with image.open("wb") as fh:
        fh.truncate(2 * 1024 * 1024)
    made = _run("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", str(image))
    if made.returncode != 0:
        return f"mkfs.ext4 failed: {made.stderr.strip()}"
    done = _run("mount", "-o", "loop", str(image), str(mount_point))
    if done.returncode != 0:
        return f"mount -o loop failed: {done.stderr.strip()}"
    _run("chmod", "0700", str(mount_point))
    return None


MOUNTERS = {"tmpfs": _mount_tmpfs, "ext4-loop": _mount_loop_ext4}


def _unmount(mount_point: Path) -> None:
    for _ in range(20):
        if _run("umount", str(mount_point)).returncode == 0:
            return
        time.sleep(0.1)  # a file still open for a moment
    _run("umount", "-l", str(mount_point))


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip a test this machine cannot run; on CI, where it must run, fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the full-disk tests, but {reason}")
    pytest.skip(reason)


def _small_fs(tmp_path: Path, kinds: list[str]) -> Iterator[Path]:
    """A small file system mounted in `tmp_path`: the first of `kinds` that can be mounted."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        skip_unless_ci("mounting a small file system needs root; this test runs as a normal user")
    if shutil.which("mount") is None:
        skip_unless_ci("no `mount` command here")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    reasons = []
    for kind in kinds:
        reason = MOUNTERS[kind](mount_point, tmp_path)
        if reason is None:
            break
        reasons.append(f"{kind}: {reason}")
    else:
        skip_unless_ci("cannot mount a small file system here: " + "; ".join(reasons))
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


@pytest.fixture(params=list(MOUNTERS))
def small_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Each kind of small file system in turn (skipped where it cannot be mounted)."""
    yield from _small_fs(tmp_path, [request.param])


@pytest.fixture
def any_small_fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs, else a loop-mounted ext4 image."""
    yield from _small_fs(tmp_path, list(MOUNTERS))


def fill(filler: Path, *, leave: int) -> None:
    """Fill the file system of `filler` up, then give back about `leave` bytes."""
    block = b"\xff" * (64 * 1024)
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            os.fsync(fh.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        size = fh.tell()
    with filler.open("r+b") as fh:
        fh.truncate(max(0, size - leave))
        os.fsync(fh.fileno())
    free = os.statvfs(filler.parent).f_bfree * os.statvfs(filler.parent).f_frsize
    assert free < leave + 128 * 1024, f"the file system still has {free} bytes free"


def assert_disk_full(message: str) -> None:
    assert "the disk is full" in message and "ENOSPC" in message, message


@pytest.mark.parametrize("free", [64 * 1024, None])
def test_a_download_that_does_not_fit_fails_cleanly_and_fits_once_space_is_freed(
    host: FileHost, small_fs: Path, free: int | None
) -> None:
    """`free` None: nothing else on the disk, and the file is larger than the whole of it."""
    out = small_fs / "out"
    out.mkdir()
    filler = small_fs / "filler"
    if free is None:
        size = 3 * 1024 * 1024
    else:
        size = 400 * 1024
        fill(filler, leave=free)
    error = refused(f"{host.url}/big/{size}", out)
    assert_disk_full(str(error))
    assert str(out) in str(error)
    assert not error.gone and error.local  # the file is still there to fetch: try again later
    assert entries(out) == []  # no partial file, no temporary file
    if free is None:
        return  # it can never fit here
    filler.unlink()
    saved = fetch(f"{host.url}/big/{size}", out)
    assert saved is not None and saved.bytes == size
    assert os.path.getsize(saved.path) == size
    assert entries(out) == ["image.png"]


def test_a_completely_full_disk_is_a_download_error_even_for_a_new_folder(
    host: FileHost, any_small_fs: Path
) -> None:
    """No room at all: making the output folder (ext4) or writing the file (tmpfs) fails."""
    fill(any_small_fs / "filler", leave=0)
    folder = any_small_fs / "a" / "b" / "c"
    error = refused(f"{host.url}/big/200000", folder)
    assert_disk_full(str(error))
    assert [p for p in any_small_fs.rglob("*") if p.name.endswith(".part")] == []


def test_the_worker_reports_a_full_disk_and_downloads_once_space_is_freed(
    host: FileHost,
    store: Store,
    any_small_fs: Path,
    monkeypatch: pytest.MonkeyPatch,
    key_env: None,
) -> None:
    out = any_small_fs / "out"
    out.mkdir()
    filler = any_small_fs / "filler"
    fill(filler, leave=32 * 1024)
    size = 300 * 1024
    host.samples = {"prompt 0": f"/big/{size}"}
    provider = ProviderConfig("bfl", "bfl", host.url, "x-key", "RUNNER_TEST_KEY")
    store.enqueue(campaign(n=1, out=out, provider=provider))
    # Slower backoff than the suite's, so the job is still retrying when the space is freed.
    monkeypatch.setenv("RUNNER_TIME_SCALE", "0.3")
    failure: list[BaseException] = []

    def work() -> None:
        async def main() -> Any:
            with anyio.fail_after(90):
                await app.work(
                    store,
                    ["c1"],
                    options=PoolOptions(tick=0.05),
                    handle_signals=False,
                    progress_every=0,
                )

        try:
            anyio.run(main)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline and thread.is_alive():
            (job,) = store.jobs("c1")
            if job.error and "disk" in job.error:
                seen = job
                break
            time.sleep(0.01)
        assert seen is not None, "the full disk was never reported on the job"
        assert seen.state.value == "downloading", (seen.state, seen.error)  # to be tried again
        assert_disk_full(seen.error or "")
        assert [n for n in entries(out) if n.endswith(".part")] == []
    finally:
        filler.unlink(missing_ok=True)  # room again: the next attempt fits
        thread.join(timeout=90)
    assert not failure, failure
    (job,) = store.jobs("c1")
    assert job.state.value == "done", (job.state, job.error)
    (record,) = job.files
    assert os.path.getsize(record["path"]) == size
    assert files_of(out) == [Path(record["path"]).name]


@pytest.mark.parametrize("ci", ["1", ""])
def test_on_ci_a_full_disk_test_that_cannot_mount_fails_instead_of_skipping(ci: str) -> None:
    """Run as a normal user (setpriv to nobody), a full-disk test cannot mount: it is skipped
    on a developer's machine and fails on CI, so that CI never passes without running it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None:
        skip_unless_ci("becoming another user for this check needs root and setpriv")
    base = Path(tempfile.mkdtemp(prefix="runner-nobody-"))
    try:
        base.chmod(0o777)
        env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER")}
        env.update({"CI": ci} if ci else {}, HOME=str(base))
        mounting = test_a_completely_full_disk_is_a_download_error_even_for_a_new_folder
        test = f"{Path(__file__).name}::{mounting.__name__}"
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
             sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
             "-rs", f"--basetemp={base / 'tmp'}", test],
            cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=90,
            check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
    output = done.stdout + done.stderr
    if ci:
        assert done.returncode == 1, output
        # a failure in the fixture's setup: pytest counts it as an error
        assert "1 error" in output and "CI must run the full-disk tests" in output, output
    else:
        assert done.returncode == 0, output
        assert "1 skipped" in output and "needs root" in output, output
