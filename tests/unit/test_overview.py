"""The status figures: time left from the recent rate, and the text and JSON shapes."""

from __future__ import annotations

import pytest

from runner.overview import (
    CampaignOverview,
    Overview,
    _per_minute,
    format_seconds,
    to_json,
    to_text,
)
from runner.progress import redraw_after
from runner.store.store import WorkerInfo


def test_eta_is_what_is_left_at_the_recent_rate() -> None:
    c = CampaignOverview(
        "c", {"done": 40, "queued": 50, "running": 10, "failed": 2}, None, 1.5, 20.0
    )
    assert (c.total, c.done, c.left) == (102, 40, 60)
    assert c.eta_seconds == 180.0  # 60 left at 20 a minute
    assert CampaignOverview("c", {"queued": 5}).eta_seconds is None  # no rate yet: unknown
    assert CampaignOverview("c", {"done": 5, "uncertain": 1}).eta_seconds == 0.0


def test_text_and_json() -> None:
    worker = WorkerInfo("h:1:a", "h", 1, ["c"], started_at=0.0, last_seen_at=95.0)
    view = Overview(
        [CampaignOverview("c", {"done": 3, "queued": 3}, "no credit", 0.12, 6.0)], [worker]
    )
    assert to_text(view, now=100.0) == [
        "c: 3/6 done (queued 3, done 3)",
        "  6.0/min lately, about 30s left; cost 0.12; stopped: no credit",
        "workers: 1",
        "  h pid 1: c; up 1m40s, seen 5s ago",
    ]
    data = to_json(view)
    assert data["campaigns"]["c"] == {
        "total": 6,
        "done": 3,
        "states": {"done": 3, "queued": 3},
        "halted": "no credit",
        "cost": 0.12,
        "rate_per_minute": 6.0,
        "eta_seconds": 30,
    }
    assert data["workers"][0]["pid"] == 1 and data["workers"][0]["campaigns"] == ["c"]
    assert to_text(Overview([]), now=0.0) == ["no jobs"]


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0, 59.4, 61, 3600, 7322)] == [
        "0s",
        "59s",
        "1m01s",
        "1h00m",
        "2h02m",
    ]


def test_rate_is_measured_over_the_window_or_since_the_first_finish() -> None:
    assert _per_minute(60, first=0.0, now=6000.0) == 6.0  # the whole 10-minute window
    assert _per_minute(60, first=5880.0, now=6000.0) == 30.0  # only 2 minutes of finishes
    assert _per_minute(10, first=5999.0, now=6000.0) == 20.0  # at least 30 s: no wild rate


def test_the_live_table_is_read_less_often_when_reading_it_takes_long() -> None:
    assert redraw_after(1.0, 0.004) == 1.0  # a few thousand jobs: every second
    # a million jobs, 0.13 s to count: reading the table keeps to a twentieth of the time
    assert redraw_after(1.0, 0.13) == pytest.approx(2.6)
    assert redraw_after(5.0, 0.13) == 5.0
