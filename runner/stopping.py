"""Stopping without losing what was paid for: the decisions and the words for them (pure).

A stop (`--max-runtime` running out, a first SIGINT or SIGTERM) ends new work at once: no queued
job is claimed or created any more. What was already created is paid for, and a result waits at
the provider for a limited time only (a BFL result about 10 minutes after it is ready), so during
a grace period the worker keeps polling and downloading every created job of its campaigns until
each settles. It exits when none created by the stop is left (other workers may go on creating:
what they create later is theirs to follow), or when the grace ends. With no grace only the jobs
in hand finish, `IN_HAND_GRACE` at most.

Nothing here reads a clock or the store: the worker, the progress output and `runner status`
pass the figures in.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.states import State

__all__ = [
    "CREATED",
    "DEFAULT_GRACE",
    "FOLLOWED",
    "IN_HAND_GRACE",
    "Next",
    "Stop",
    "after_stop",
    "expired_warning",
    "notice",
]

DEFAULT_GRACE = 15 * 60.0  # seconds: a BFL result is ready within minutes, then gone in ~10
IN_HAND_GRACE = 30.0  # seconds jobs in hand get to finish when there is no grace
# Jobs whose prediction was (or may have been) created and is not saved yet: the money is spent.
# Those created by the stop (`Store.count_created_by`) are what it waits for.
CREATED = (State.SUBMITTING, State.RUNNING, State.DOWNLOADING, State.RECONCILING)
# What a stopping worker still claims: all but SUBMITTING, which only a create in hand is in (or
# a dead worker's, which the sweep turns into RECONCILING first). A reconcile that finds the
# create never happened queues the job again: the next run submits it.
FOLLOWED = (State.DOWNLOADING, State.RUNNING, State.RECONCILING)
SIGNALS = ("SIGINT", "SIGTERM")  # reasons that someone at a terminal (or a supervisor) gave


@dataclass(frozen=True)
class Stop:
    """A stop that was asked for: why (`max runtime reached`, `SIGTERM`), since when, and how
    long created jobs are followed after it (`grace`, seconds; 0 only finishes jobs in hand)."""

    reason: str
    since: float
    grace: float

    @property
    def follows(self) -> bool:
        """Whether created jobs are still claimed, polled and downloaded."""
        return self.grace > 0

    @property
    def until(self) -> float:
        """When the worker stops at the latest, interrupting what it still has in hand."""
        return self.since + (self.grace if self.follows else IN_HAND_GRACE)

    @property
    def claims(self) -> tuple[State, ...]:
        return FOLLOWED if self.follows else ()

    @property
    def by_signal(self) -> bool:
        return self.reason in SIGNALS

    def to_json(self) -> dict[str, Any]:
        """As `workers.stopping` holds it (read back by `from_json`)."""
        return {
            "reason": self.reason,
            "since": self.since,
            "until": self.until,
            "grace": self.grace,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stop:
        since = float(data.get("since") or 0.0)
        grace = data.get("grace")
        if grace is None:  # written without it: the grace is what `until` says
            grace = float(data.get("until") or since) - since
        return cls(str(data.get("reason") or "asked"), since, float(grace))


class Next(enum.Enum):
    WAIT = "wait"  # something created is still unsettled, and there is time
    DONE = "done"  # nothing is left to wait for: exit
    OUT_OF_TIME = "out of time"  # the grace ended first: interrupt what is in hand, exit


def after_stop(stop: Stop, now: float, *, in_hand: int, unsettled: bool) -> Next:
    """What a stopping worker does next, given the jobs it has in hand and whether any job of
    its campaigns that was created by the stop is still unsettled (`unsettled`, whoever holds
    it: jobs created after the stop are left to the workers that created them)."""
    if in_hand == 0 and not (stop.follows and unsettled):
        return Next.DONE
    if now >= stop.until:
        return Next.OUT_OF_TIME
    return Next.WAIT


def _clock_time(at: float, now: float) -> str:
    """`14:05:07`, with the date when it is not today."""
    local = time.localtime(at)
    if time.localtime(now)[:3] == local[:3]:
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def _jobs(n: int) -> str:
    return f"{n} created job" + ("" if n == 1 else "s")


def notice(stop: Stop, waiting: int, now: float, *, hint: bool = True) -> str:
    """One line for the progress output and `runner status`: stopping, why, what for, until
    when. `hint` adds that Ctrl-C stops at once (said only where it can be pressed)."""
    until = _clock_time(stop.until, now)
    if stop.follows:
        doing = f"waiting for {_jobs(waiting)} to be saved, until {until} at most"
    else:
        doing = f"finishing the jobs in hand (--grace 0), until {until} at most"
    tail = ""
    if hint:
        tail = "; Ctrl-C again stops at once" if stop.by_signal else "; Ctrl-C stops at once"
    return f"stopping ({stop.reason}): no new work; {doing}{tail}"


def expired_warning(stop: Stop, unsettled: int) -> str:
    """Said once when the grace ends with created jobs left: what they are, and what to do."""
    return (
        f"stopping ({stop.reason}): the grace ended with {_jobs(unsettled)} not saved yet. They "
        "are paid for, and their results wait at the provider for a limited time only (a BFL "
        "result expires about 10 minutes after it is ready): run the same command again soon to "
        "fetch them."
    )
