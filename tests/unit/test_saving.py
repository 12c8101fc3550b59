"""Backpressure from saving, as pure decisions: which campaigns pause, for how long a local
failure waits, what the user is told, and how the progress view shows it."""

from __future__ import annotations

import errno
import random

import pytest

from runner import progress, states
from runner.overview import CampaignOverview, Overview
from runner.retry import LOCAL_RETRY_CAP, RetryPolicy, local_retry_wait
from runner.saving import (
    EVERY_FOLDER,
    Pause,
    SavePauses,
    advice,
    describe,
    held_by,
    pause_warning,
    paused_campaigns,
    resume_message,
    scope_of,
)
from runner.states import Job, State

DISK, OTHER = 41, 42
DEVICES = {"a": DISK, "b": DISK, "c": OTHER}


def pause(code: int = errno.ENOSPC, device: int = DISK, since: float = 100.0) -> Pause:
    return Pause(scope_of(code, device), device, "/data/out", code, since)


@pytest.mark.parametrize(
    ("code", "scope"),
    [
        (errno.ENOSPC, DISK),
        (errno.EDQUOT, DISK),
        (errno.EROFS, DISK),
        (errno.EACCES, DISK),
        (errno.EMFILE, EVERY_FOLDER),
        (errno.ENFILE, EVERY_FOLDER),
        (None, DISK),
    ],
)
def test_a_disk_condition_holds_its_file_system_and_no_descriptors_every_folder(
    code: int | None, scope: int
) -> None:
    assert scope_of(code, DISK) == scope


def test_the_campaigns_on_the_failing_file_system_pause_and_no_others() -> None:
    full = pause()
    assert paused_campaigns(DEVICES, {DISK: full}) == {"a": full, "b": full}
    assert paused_campaigns(DEVICES, {}) == {}
    assert held_by(full, DEVICES, {DISK: full}) == ["a", "b"]


def test_out_of_descriptors_pauses_every_campaign() -> None:
    starved = pause(errno.EMFILE)
    assert paused_campaigns(DEVICES, {EVERY_FOLDER: starved}) == dict.fromkeys("abc", starved)


def test_an_episode_is_told_once_and_ends_with_a_save_on_its_file_system() -> None:
    pauses = SavePauses()
    assert not pauses
    first = pause()
    assert pauses.failed(first) is True
    assert pauses.failed(pause(since=101.0)) is False  # the same episode: not news
    assert pauses.by_scope[DISK] is first and pauses.lasts(first)
    assert pauses.saved(OTHER) == []  # another disk working says nothing about this one
    assert pauses.saved(DISK) == [first]
    assert not pauses and not pauses.lasts(first)
    assert pauses.failed(pause(since=200.0)) is True  # a new episode is told again


def test_a_file_written_anywhere_ends_a_shortage_of_descriptors() -> None:
    pauses = SavePauses()
    starved, full = pause(errno.EMFILE), pause(device=OTHER)
    pauses.failed(starved)
    pauses.failed(full)
    assert pauses.saved(DISK) == [starved]
    assert pauses.by_scope == {OTHER: full}


def test_a_local_failure_is_retried_from_a_second_doubling_to_a_cap() -> None:
    assert [local_retry_wait(n, 1.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert local_retry_wait(100, 1.0) == LOCAL_RETRY_CAP
    assert local_retry_wait(0, 1.0) == 1.0
    assert local_retry_wait(3, 0.05) == pytest.approx(0.2)  # scaled as every wait is


def test_a_local_download_failure_waits_by_its_tries_and_never_strikes() -> None:
    policy = RetryPolicy(scale=0.5)
    job = Job(
        id=1, campaign="c", key="k", index=1, provider="bfl", model="m", input={}, meta={},
        state=State.DOWNLOADING, strikes=policy.max_download_attempts - 1,
    )  # fmt: skip
    for tries, wait in ((1, 0.5), (2, 1.0), (3, 2.0), (9, 4.0)):
        change = states.on_download_error(
            job, "disk full", 10.0, policy, random.Random(0), url_gone=False, local=True,
            local_tries=tries,
        )  # fmt: skip
        assert change.to is State.DOWNLOADING
        assert change.values["next_attempt_at"] == pytest.approx(10.0 + wait)
        assert "strikes" not in change.values


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "free space (or inodes) on the disk holding /data/out"),
        (errno.EDQUOT, "free space on the disk holding /data/out, or raise the quota"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "write to /data/out"),
        (errno.EMFILE, "ulimit -n"),
        (errno.ENFILE, "fs.file-max"),
        (errno.EIO, "/data/out"),
    ],
)
def test_the_warning_says_where_what_failed_what_happens_and_what_to_do(
    code: int, words: str
) -> None:
    told = pause(code)
    assert words in advice(code, "/data/out")
    warning = pause_warning(told, ["a", "b"])
    assert "/data/out" in warning and words in warning
    assert told.words in warning  # the OS's own words, e.g. "No space left on device (ENOSPC)"
    assert "New creates of a, b are paused" in warning and "downloads are retried" in warning


def test_the_os_words_are_the_os_words() -> None:
    assert pause(errno.ENOSPC).words == "No space left on device (ENOSPC)"
    assert pause(errno.EMFILE).words == "Too many open files (EMFILE)"


def test_the_resume_line_says_how_long_and_which_campaigns() -> None:
    line = resume_message(pause(since=100.0), ["a"], 112.4)
    assert line == "saving in /data/out works again after 12 s: new creates of a resume"


def _view() -> Overview:
    return Overview(
        [
            CampaignOverview("a", {"queued": 3, "downloading": 2}),
            CampaignOverview("c", {"done": 1}),
        ]
    )


def test_the_progress_lines_show_the_pause_as_the_campaigns_state() -> None:
    why = describe(pause())
    a, c = _view().campaigns
    assert progress.log_line(a, {"a": why}).endswith(f"; {why}")
    assert "saving paused" in why and "/data/out" in why and "No space left" in why
    assert "saving paused" not in progress.log_line(c, {"a": why})
    assert "saving paused" not in progress.log_line(a, {})


def test_the_live_table_shows_the_pause() -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(progress.render(_view(), [], {"a": describe(pause())}))
    text = console.export_text()
    assert "a [saving paused]" in text and "c [saving paused]" not in text
    assert "a: saving paused (No space left on device (ENOSPC) in /data/out)" in text
    console = Console(width=200, record=True)
    console.print(progress.render(_view(), []))
    assert "saving paused" not in console.export_text()
