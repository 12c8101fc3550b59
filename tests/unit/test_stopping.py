"""The decisions of a stop (whether anything is left to wait for, until when) and its words."""

from __future__ import annotations

import time

import pytest
from rich.console import Console

from runner.cli import Grace
from runner.overview import CampaignOverview, Overview, to_json, to_text
from runner.progress import render
from runner.states import State
from runner.stopping import (
    CREATED,
    IN_HAND_GRACE,
    Next,
    Stop,
    after_stop,
    expired_warning,
    notice,
)
from runner.store.store import WorkerInfo
from runner.worker.pool import creating

NOW = time.mktime((2026, 12, 4, 1, 0, 0, 0, 0, -1))  # local 01:00:00
STOP = Stop("SIGTERM", NOW, grace=900.0)


@pytest.mark.parametrize(
    ("stop", "after", "in_hand", "unsettled", "expected"),
    [
        # with a grace: wait while anything created is unsettled, in hand or not
        (STOP, 10, 0, True, Next.WAIT),
        (STOP, 10, 3, False, Next.WAIT),
        (STOP, 10, 0, False, Next.DONE),  # nothing left: out at once, long before the grace
        (STOP, 900, 2, True, Next.OUT_OF_TIME),
        (STOP, 900, 0, True, Next.OUT_OF_TIME),
        (STOP, 900, 0, False, Next.DONE),  # nothing left at the last moment: not out of time
        # no grace: only the jobs in hand count, and they get IN_HAND_GRACE
        (Stop("x", NOW, 0.0), 1, 0, True, Next.DONE),
        (Stop("x", NOW, 0.0), 1, 1, True, Next.WAIT),
        (Stop("x", NOW, 0.0), IN_HAND_GRACE, 1, False, Next.OUT_OF_TIME),
    ],
)
def test_what_a_stopping_worker_does_next(
    stop: Stop, after: float, in_hand: int, unsettled: bool, expected: Next
) -> None:
    assert after_stop(stop, NOW + after, in_hand=in_hand, unsettled=unsettled) is expected


def test_a_grace_follows_created_jobs_and_none_finishes_what_is_in_hand() -> None:
    assert STOP.follows and STOP.until == NOW + 900
    assert State.QUEUED not in STOP.claims and State.SUBMITTING not in STOP.claims
    assert set(STOP.claims) == set(CREATED) - {State.SUBMITTING}
    quick = Stop("max runtime reached", NOW, 0.0)
    assert not quick.follows and quick.claims == () and quick.until == NOW + IN_HAND_GRACE


def test_the_stop_as_the_workers_table_holds_it() -> None:
    data = STOP.to_json()
    assert data == {"reason": "SIGTERM", "since": NOW, "until": NOW + 900, "grace": 900.0}
    assert Stop.from_json(data) == STOP
    assert Stop.from_json({"reason": "r", "since": 5.0, "until": 65.0}) == Stop("r", 5.0, 60.0)


def test_the_notice_says_why_what_for_and_until_when() -> None:
    assert notice(STOP, 18, NOW) == (
        "stopping (SIGTERM): no new work; waiting for 18 created jobs to be saved, until "
        "01:15:00 at most; Ctrl-C again stops at once"
    )
    timed = Stop("max runtime reached", NOW, 900.0)
    assert notice(timed, 1, NOW).endswith(
        "1 created job to be saved, until 01:15:00 at most; Ctrl-C stops at once"
    )
    assert notice(STOP, 18, NOW, hint=False).endswith("until 01:15:00 at most")
    assert "finishing the jobs in hand (--grace 0), until 01:00:30" in notice(
        Stop("SIGINT", NOW, 0.0), 18, NOW
    )
    # a grace ending on another day says which
    assert "until 2026-12-05 01:00:00 at most" in notice(Stop("x", NOW, 86400.0), 0, NOW)


def test_the_grace_ending_says_how_many_and_what_that_means() -> None:
    text = expired_warning(STOP, 5)
    assert "5 created jobs not saved yet" in text
    assert "BFL result expires about 10 minutes after it is ready" in text
    assert "run the same command again soon" in text


def test_status_shows_a_stopping_worker_on_its_line() -> None:
    stopping = WorkerInfo("h:1:a", "h", 1, ["c"], 0.0, NOW - 2, stopping=STOP.to_json())
    other = WorkerInfo("h:2:b", "h", 2, ["c"], 0.0, NOW - 1)
    campaign = CampaignOverview("c", {"queued": 10, "running": 7})
    view = Overview([campaign], [stopping, other], waiting={"h:1:a": 7})
    lines = to_text(view, now=NOW)
    assert lines[-2].startswith("  h pid 1: c; up ") and lines[-2].endswith(
        "; stopping (SIGTERM): no new work; waiting for 7 created jobs to be saved, until "
        "01:15:00 at most"
    )
    assert "stopping" not in lines[-1]
    workers = to_json(view)["workers"]
    assert workers[0]["stopping"] == {
        "reason": "SIGTERM",
        "since": NOW,
        "until": NOW + 900,
        "grace": 900.0,
        "waiting": 7,
    }
    assert workers[1]["stopping"] is None
    assert workers[0]["id"] == "h:1:a" and workers[0]["pid"] == 1  # nothing renamed


def test_the_live_table_says_the_worker_is_stopping() -> None:
    view = Overview([CampaignOverview("a", {"queued": 10, "running": 5})])
    line = notice(STOP, 5, NOW)
    console = Console(record=True, width=200)
    console.print(render(view, [], stopping=line))
    drawn = console.export_text()
    assert "stopping (SIGTERM)" in drawn and "Ctrl-C again stops at once" in drawn
    console = Console(record=True, width=200)
    console.print(render(view, []))
    assert "stopping" not in console.export_text()


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("0s", 0.0), (" 0m ", 0.0), ("15m", 900.0), ("90", 90.0)]
)
def test_grace_takes_a_duration_or_0(text: str, seconds: float) -> None:
    assert Grace().convert(text, None, None) == seconds


def test_a_stopping_worker_leaves_its_part_of_the_create_rate_to_the_others() -> None:
    workers = [
        WorkerInfo("h:1:a", "h", 1, ["c"], 0.0, last_seen_at=100.0),
        WorkerInfo("h:2:b", "h", 2, ["c"], 0.0, last_seen_at=100.0, stopping=STOP.to_json()),
        WorkerInfo("h:3:c", "h", 3, ["c"], 0.0, last_seen_at=10.0),  # not seen lately
    ]
    assert [w.pid for w in creating(workers, live_since=40.0)] == [1]
