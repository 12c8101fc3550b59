"""Backpressure from saving: which campaigns stop creating while results cannot be saved.

A save that fails for this machine's own reason (a full disk, a quota, a read-only or
unwritable folder, no file descriptors left) is no fault of the result: its URL still works,
and it is saved once the cause is gone. Every new create meanwhile would be one more paid result
that cannot be saved, racing its URL's lifetime (about 10 minutes at BFL). So a failed save
pauses new creates of every campaign whose output folder is on the same file system (every
campaign, when the process is out of descriptors: those are the process's, not a disk's) until
a save there succeeds again. Polls and downloads go on.

Pure and in memory, per process: another worker on another machine has another disk. The I/O
(the file system a folder is on, the probe) is in `runner.worker.download`; `runner.worker.pool`
applies what is decided here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The scope of a pause no st_dev can be: descriptors run out for every folder at once.
EVERY_FOLDER = -1
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
# While creates are paused and nothing is left to download, no save can end the pause: a
# probe (a small file written, fsynced and removed) tries this often (seconds, scaled).
PROBE_EVERY = 3.0


@dataclass(frozen=True)
class Pause:
    """One episode: saves in `folder` (on file system `device`) failed with `code`."""

    scope: int  # `device`, or EVERY_FOLDER
    device: int
    folder: str
    code: int | None
    since: float

    @property
    def words(self) -> str:
        """What the operating system said, as it said it."""
        if self.code is None:
            return "a local error"
        return f"{os.strerror(self.code)} ({errno.errorcode.get(self.code, self.code)})"


def scope_of(code: int | None, device: int) -> int:
    return EVERY_FOLDER if code in OUT_OF_DESCRIPTORS else device


class SavePauses:
    """The pauses of this process by scope; at most one episode per scope at a time."""

    def __init__(self) -> None:
        self.by_scope: dict[int, Pause] = {}

    def __bool__(self) -> bool:
        return bool(self.by_scope)

    def failed(self, pause: Pause) -> bool:
        """A save failed: whether this starts an episode (which is then told once)."""
        if pause.scope in self.by_scope:
            return False
        self.by_scope[pause.scope] = pause
        return True

    def saved(self, device: int) -> list[Pause]:
        """A file was written on `device`: the episodes that ends. A file opened at all ends a
        shortage of descriptors too."""
        return [self.by_scope.pop(s) for s in (device, EVERY_FOLDER) if s in self.by_scope]

    def lasts(self, pause: Pause) -> bool:
        return self.by_scope.get(pause.scope) is pause


def paused_campaigns(devices: Mapping[str, int], pauses: Mapping[int, Pause]) -> dict[str, Pause]:
    """The campaigns that may not create now, with the pause that holds each: those whose
    output folder is on a file system where saving fails (by `devices`, each campaign's file
    system), or all of them while descriptors are short."""
    every = pauses.get(EVERY_FOLDER)
    held = {}
    for name, device in devices.items():
        pause = pauses.get(device) or every
        if pause is not None:
            held[name] = pause
    return held


def held_by(pause: Pause, devices: Mapping[str, int], pauses: Mapping[int, Pause]) -> list[str]:
    """The campaigns `pause` itself holds, sorted (for the messages)."""
    return sorted(name for name, p in paused_campaigns(devices, pauses).items() if p is pause)


def advice(code: int | None, folder: str) -> str:
    """What the user can do about it."""
    if code == errno.ENOSPC:
        return f"free space (or inodes) on the disk holding {folder}"
    if code == errno.EDQUOT:
        return f"free space on the disk holding {folder}, or raise the quota"
    if code == errno.EROFS:
        return f"make the file system holding {folder} writable again (it is read-only)"
    if code in (errno.EACCES, errno.EPERM):
        return f"let the user running the runner write to {folder}"
    if code == errno.EMFILE:
        return (
            "raise the limit of open files (`prlimit --nofile` on this process, `ulimit -n` "
            "before the next run)"
        )
    if code == errno.ENFILE:
        return "close files other programs hold, or raise the system's limit (fs.file-max)"
    return f"fix what keeps {folder} from being written"


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    return ", ".join(listed) if listed else "no campaign"


def pause_warning(pause: Pause, names: Iterable[str]) -> str:
    return (
        f"cannot save results in {pause.folder}: {pause.words}. New creates of {_names(names)} "
        "are paused (polls go on, and downloads are retried until saving works again); "
        f"{advice(pause.code, pause.folder)}"
    )


def resume_message(pause: Pause, names: Iterable[str], now: float) -> str:
    took = max(0.0, now - pause.since)
    return (
        f"saving in {pause.folder} works again after {took:.0f} s: new creates of "
        f"{_names(names)} resume"
    )


def describe(pause: Pause) -> str:
    """The pause as a campaign's state, for the progress view."""
    return f"saving paused ({pause.words} in {pause.folder}); new creates wait"
