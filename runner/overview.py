"""What `runner status` shows: per campaign counts, cost, recent rate and ETA, and the workers.

`overview()` reads the store once per figure (each an indexed aggregate, so a million jobs stay
fast); `to_json()` and `to_text()` only format. The JSON shape is documented in the README and
kept stable for scripts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from runner.states import SETTLED, State
from runner.stopping import CREATED, Stop, notice
from runner.store import Store
from runner.store.store import WorkerInfo

RATE_WINDOW = 600.0  # seconds of finished jobs the rate (and so the ETA) is measured over
RATE_FLOOR = 30.0  # a campaign that just started is measured over at least this long


@dataclass(frozen=True)
class CampaignOverview:
    name: str
    states: dict[str, int]
    halted: str | None = None
    cost: float | None = None
    rate_per_minute: float = 0.0  # jobs done per minute over the last RATE_WINDOW

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def done(self) -> int:
        return self.states.get(State.DONE.value, 0)

    @property
    def left(self) -> int:
        return sum(n for s, n in self.states.items() if State(s) not in SETTLED)

    @property
    def eta_seconds(self) -> float | None:
        if self.left == 0:
            return 0.0
        if self.rate_per_minute <= 0:
            return None
        return self.left / self.rate_per_minute * 60.0


@dataclass(frozen=True)
class Overview:
    campaigns: list[CampaignOverview]
    workers: list[WorkerInfo] = field(default_factory=list)
    # per stopping worker (by id): the jobs of its campaigns created by the stop, not saved yet
    waiting: dict[str, int] = field(default_factory=dict)


def overview(store: Store, campaign: str | None = None, now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    counts = store.counts(campaign)
    costs = store.costs(campaign)
    recent = store.finished_since(now - RATE_WINDOW, campaign)
    campaigns = [
        CampaignOverview(
            name=name,
            states=dict(sorted(states.items())),
            halted=store.halted(name),
            cost=costs.get(name),
            rate_per_minute=_per_minute(*recent.get(name, (0, now)), now),
        )
        for name, states in sorted(counts.items())
    ]
    names = {c.name for c in campaigns}
    workers = [w for w in store.workers() if campaign is None or set(w.campaigns) & names]
    waiting = {
        w.id: store.count_created_by(w.campaigns, CREATED, Stop.from_json(w.stopping).since)
        for w in workers
        if w.stopping
    }
    return Overview(campaigns, workers, waiting)


def _per_minute(done: int, first: float, now: float) -> float:
    """Jobs a minute over the window, or since the first of them finished when that is later."""
    return done / max(RATE_FLOOR, min(RATE_WINDOW, now - first)) * 60.0


def to_json(view: Overview) -> dict[str, Any]:
    return {
        "campaigns": {
            c.name: {
                "total": c.total,
                "done": c.done,
                "states": c.states,
                "halted": c.halted,
                "cost": c.cost,
                "rate_per_minute": round(c.rate_per_minute, 3),
                "eta_seconds": None if c.eta_seconds is None else round(c.eta_seconds),
            }
            for c in view.campaigns
        },
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "campaigns": w.campaigns,
                "started_at": w.started_at,
                "last_seen_at": w.last_seen_at,
                "stopping": _stopping_json(view, w),
            }
            for w in view.workers
        ],
    }


def _stopping_json(view: Overview, w: WorkerInfo) -> dict[str, Any] | None:
    if not w.stopping:
        return None
    stop = Stop.from_json(w.stopping)
    return {
        "reason": stop.reason,
        "since": stop.since,
        "until": stop.until,
        "grace": stop.grace,
        "waiting": view.waiting.get(w.id, 0),
    }


def format_counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{state.value} {counts[state.value]}" for state in State if counts.get(state.value)]
    return f"{counts.get('done', 0)}/{total} done ({', '.join(parts) or 'no jobs'})"


def format_seconds(value: float) -> str:
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def to_text(view: Overview, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    if not view.campaigns:
        return ["no jobs"]
    lines = []
    for c in view.campaigns:
        lines.append(f"{c.name}: {format_counts(c.states)}")
        details = []
        if c.left and c.rate_per_minute > 0:
            eta = format_seconds(c.eta_seconds or 0.0)
            details.append(f"{c.rate_per_minute:.1f}/min lately, about {eta} left")
        if c.cost is not None:
            details.append(f"cost {c.cost:.2f}")
        if c.halted:
            details.append(f"stopped: {c.halted}")
        if details:
            lines.append("  " + "; ".join(details))
    if view.workers:
        lines.append(f"workers: {len(view.workers)}")
        for w in view.workers:
            up, seen = format_seconds(now - w.started_at), format_seconds(now - w.last_seen_at)
            names = ", ".join(w.campaigns)
            line = f"  {w.host} pid {w.pid}: {names}; up {up}, seen {seen} ago"
            if w.stopping:
                stop = Stop.from_json(w.stopping)
                line += "; " + notice(stop, view.waiting.get(w.id, 0), now, hint=False)
            lines.append(line)
    return lines
