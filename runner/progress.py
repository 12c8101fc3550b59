"""Progress while a campaign runs: a live table on a terminal, a log line elsewhere.

On a terminal (rich): per campaign the jobs per state, images per minute, time left, cost, and
the latest problems, redrawn every second (less often when counting a big campaign takes a
while). Not a terminal (cron, a pipe): one plain log line per campaign a minute; the worker
logs the changes worth knowing (a halt, the end) itself.
Both read the same `runner.overview` figures the `status` command shows, and what only this
process knows: campaigns whose new creates wait because their results cannot be saved here
(`paused`, from the worker; see runner.saving), and, while the worker stops, why, how many
created jobs it still waits for and until when at most (`stop`; see runner.stopping).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runner.overview import CampaignOverview, Overview, format_counts, format_seconds, overview
from runner.states import State
from runner.stopping import CREATED, Stop, notice
from runner.store import Store

log = logging.getLogger("runner")

IN_FLIGHT_STATES = (State.SUBMITTING, State.RUNNING, State.RECONCILING)
PROBLEM_STATES = (State.FAILED, State.MODERATED, State.EXPIRED, State.UNCERTAIN)
SNAPSHOT_SHARE = 20  # the live table waits at least this many times as long as reading it took
Paused = Callable[[], dict[str, str]]  # campaign -> why its new creates wait, in this process
StopSource = Callable[[], Stop | None]  # the worker's stop, once one was asked for


def _nothing_paused() -> dict[str, str]:
    return {}


def _no_stop() -> Stop | None:
    return None


def _count(c: CampaignOverview, states: tuple[State, ...]) -> int:
    return sum(c.states.get(s.value, 0) for s in states)


def render(
    view: Overview,
    problems: list[dict[str, Any]],
    paused: dict[str, str] | None = None,
    stopping: str | None = None,
) -> RenderableType:
    """The live display: a table of campaigns, the `stopping` line when the worker stops, then
    the latest problems (pure)."""
    paused = paused or {}
    table = Table(expand=False, header_style="bold")
    for column in ("campaign", "done", "queued", "in flight", "saving", "problems"):
        table.add_column(column, justify="left" if column == "campaign" else "right")
    for column in ("per min", "left", "cost"):
        table.add_column(column, justify="right")
    for c in view.campaigns:
        eta = c.eta_seconds
        mark = " [stopped]" if c.halted else " [saving paused]" if c.name in paused else ""
        table.add_row(
            Text(c.name + mark),  # a Text: "[stopped]" in a plain str would be read as markup
            f"{c.done}/{c.total}",
            str(c.states.get(State.QUEUED.value, 0)),
            str(_count(c, IN_FLIGHT_STATES)),
            str(c.states.get(State.DOWNLOADING.value, 0)),
            str(_count(c, PROBLEM_STATES)),
            f"{c.rate_per_minute:.1f}",
            "-" if eta is None else format_seconds(eta),
            "-" if c.cost is None else f"{c.cost:.2f}",
        )
    parts: list[RenderableType] = [table]
    for c in view.campaigns:
        if c.halted:
            parts.append(Text(f"{c.name} stopped: {c.halted}", style="bold red"))
        elif c.name in paused:
            parts.append(Text(f"{c.name}: {paused[c.name]}", style="bold yellow"))
    if stopping is not None:
        parts.append(Text(stopping, style="bold yellow"))
    if problems:
        parts.append(Text("latest problems:", style="bold"))
        for p in problems:
            line = f"  {p['campaign']}/{p['key']} {p['state']}: {p['error'] or ''}"
            parts.append(Text(line[:200], style="yellow", overflow="ellipsis", no_wrap=True))
    return Group(*parts)


def _snapshot(store: Store, names: list[str]) -> tuple[Overview, list[dict[str, Any]]]:
    views = [overview(store, name) for name in names]
    view = Overview([c for v in views for c in v.campaigns])
    return view, store.recent_problems(names, PROBLEM_STATES, limit=3)


def _stopping(store: Store, names: list[str], stop: Stop | None) -> str | None:
    """What a stopping worker waits for, counted from the jobs, and until when."""
    if stop is None:
        return None
    return notice(stop, store.count_created_by(names, CREATED, stop.since), time.time())


def _read(
    store: Store, names: list[str], stop: Stop | None
) -> tuple[Overview, list[dict[str, Any]], str | None]:
    return (*_snapshot(store, names), _stopping(store, names, stop))


def redraw_after(every: float, took: float) -> float:
    """Seconds until the live table is read again, when reading it last took `took`."""
    return max(every, SNAPSHOT_SHARE * took)


async def live(
    store: Store,
    names: list[str],
    every: float = 1.0,
    paused: Paused = _nothing_paused,
    stop: StopSource = _no_stop,
) -> None:
    """Redraw the table every `every` seconds until cancelled (then draw it once more).

    The counts read every job of the campaigns (0.13 s with 1,000,000 jobs): the table is then
    redrawn less often, so that reading it never takes more than a twentieth of the time."""
    console = Console(stderr=True)

    async def drawn() -> RenderableType:
        view, problems, stopping = await anyio.to_thread.run_sync(_read, store, names, stop())
        return render(view, problems, paused(), stopping)

    with Live(await drawn(), console=console, auto_refresh=False) as display:
        try:
            took = 0.0
            while True:
                await anyio.sleep(redraw_after(every, took))
                started = time.monotonic()
                table = await drawn()
                took = time.monotonic() - started
                display.update(table, refresh=True)
        finally:
            with anyio.CancelScope(shield=True):
                display.update(await drawn(), refresh=True)


def log_line(c: CampaignOverview, paused: dict[str, str]) -> str:
    """A campaign's plain progress line (pure)."""
    rate = f", {c.rate_per_minute:.1f}/min" if c.rate_per_minute else ""
    eta = c.eta_seconds
    left = f", about {format_seconds(eta)} left" if eta else ""
    why = f"; {paused[c.name]}" if c.name in paused else ""
    return f"{c.name}: {format_counts(c.states)}{rate}{left}{why}"


async def log_lines(
    store: Store,
    names: list[str],
    every: float = 60.0,
    paused: Paused = _nothing_paused,
    stop: StopSource = _no_stop,
) -> None:
    """A plain line per campaign every `every` seconds, for logs; and while the worker stops,
    a line more saying what it still waits for (the worker says when the stop begins)."""
    while True:
        await anyio.sleep(every)
        view, _, stopping = await anyio.to_thread.run_sync(_read, store, names, stop())
        held = paused()
        for c in view.campaigns:
            log.info("%s", log_line(c, held))
        if stopping is not None:
            log.warning("%s", stopping)
