"""What the worker asks the database at every round of claims costs the same whatever the size
of the queue (SQLite, counted in SQLite's own virtual machine steps, which do not depend on the
machine's speed).

A campaign of 100,000 prompts sits in the queue for hours while the worker asks, many times a
second, when something falls due and how many provider slots are held. A statement that reads
the whole queue for that (a `min()` grouped by state, or SQLite's planner choosing the
(campaign, state) index over the lease-owner one, counting every job to learn whether any is
left, or sorting every job for a budget's last cost) cost milliseconds per round at 3,000 jobs
and grows with the queue; these tests compare a short queue with a long one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.states import IN_FLIGHT, SETTLED, Change, State
from runner.store import open_store, queries
from runner.store.schema import jobs
from runner.store.store import Store
from tests.factories import campaign

SHORT, LONG = 200, 20_000
NOW = 2_000_000_000.0  # after every job's due time
STEP = 10  # VM instructions per progress callback
UNSETTLED = [s for s in State if s not in SETTLED]
BILLED = IN_FLIGHT | {State.DOWNLOADING, State.DONE, State.UNCERTAIN}


def _store(folder: Path, queued: int) -> Store:
    """`queued` jobs waiting, 20 running and 5 claimed to submit, as a busy worker sees it."""
    store = open_store(str(folder / "runner.db"))
    store.enqueue(campaign(n=queued + 25), now=1.0)
    claimed = store.claim(State.QUEUED, ["c1"], owner="w", now=NOW, lease_seconds=600.0, limit=25)
    for job in claimed[:20]:
        assert store.apply(Change(job.id, State.QUEUED, State.SUBMITTING), owner="w", release=False)
        running = Change(job.id, State.SUBMITTING, State.RUNNING, {"remote_id": f"r{job.id}"})
        assert store.apply(running, owner="w", release=False)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Store]]:
    made = {n: _store(tmp_path_factory.mktemp(f"q{n}"), n) for n in (SHORT, LONG)}
    yield made
    for store in made.values():
        store.close()


def _steps(store: Store, statement: Any, params: dict[str, Any] | None = None) -> int:
    """SQLite VM instructions (in units of STEP) to run `statement` and read all its rows;
    whatever it writes is rolled back."""
    with store.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        count = 0

        def tick() -> int:
            nonlocal count
            count += 1
            return 0  # go on

        conn.begin()
        driver.set_progress_handler(tick, STEP)
        try:
            conn.execute(statement, params or {}).fetchall()
        finally:
            driver.set_progress_handler(None, 0)
            conn.rollback()
    return count


def _claim(state: State, *, oldest_ready_first: bool = False) -> tuple[Any, dict[str, Any]]:
    return queries.claim(
        "sqlite",
        state=state,
        campaigns_=["c1"],
        owner="w2",
        now=NOW,
        lease_until=NOW + 600,
        limit=10,
        oldest_ready_first=oldest_ready_first,
    )


STATEMENTS = {
    "earliest due time per state": lambda: (
        queries.due_by_state(("c1",), (State.QUEUED, State.RUNNING, State.DOWNLOADING)),
        {"now": NOW},
    ),
    "provider slots held": lambda: (queries.count_slots_held("sqlite", ["c1"], NOW), None),
    "anything left to do": lambda: (queries.any_job_in("c1", tuple(UNSETTLED)), None),
    "anything left but the queue (a halted campaign)": lambda: (
        queries.any_job_in("c1", tuple(s for s in UNSETTLED if s is not State.QUEUED)),
        None,
    ),
    "budget: what was spent": lambda: (queries.spend("sqlite", "c1", BILLED, NOW), None),
    "budget: the last cost reported": lambda: (queries.last_cost("c1"), None),
    "claim of queued jobs to submit": lambda: _claim(State.QUEUED),
    "claim of running jobs to poll": lambda: _claim(State.RUNNING),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(STATEMENTS))
def test_a_round_of_claims_costs_the_same_with_a_hundred_times_the_queue(
    stores: dict[int, Store], name: str
) -> None:
    statement, params = STATEMENTS[name]()
    short = _steps(stores[SHORT], statement, params)
    long = _steps(stores[LONG], statement, params)
    assert short > 0
    # an index seek grows with the log of the queue; a scan of it grows 100 times
    assert long <= 2 * short + 20, (
        f"{name}: {short * STEP} VM steps at {SHORT}, {long * STEP} at {LONG}"
    )


def test_the_statements_behind_a_round_of_claims_answer_right(stores: dict[int, Store]) -> None:
    store = stores[LONG]

    def held(now: float) -> list[int]:
        with store.read() as conn:
            rows = conn.execute(queries.count_slots_held("sqlite", ["c1"], now)).all()
        assert {name for name, _ in rows} == {"c1"}
        return sorted(n for _, n in rows)

    assert held(NOW) == [5, 20]  # 5 claimed to submit, 20 running
    assert held(NOW + 3600) == [20]  # the claims' leases ran out, the running jobs hold on
    assert store.has_jobs("c1", UNSETTLED)
    assert store.has_jobs("c1", [State.RUNNING])
    assert not store.has_jobs("c1", [State.DOWNLOADING, State.DONE])
    assert not store.has_jobs("other", UNSETTLED)
    spend = store.spend("c1", NOW)  # no cost reported; 20 running and 5 claimed may be billed
    assert (spend.known, spend.unknown, spend.last_cost) == (0.0, 25, None)
    states = [State.QUEUED, State.RUNNING, State.DOWNLOADING]
    # the 20 running jobs are in hand (leased): not due, or every round would claim nothing
    due = store.due_by_state(["c1"], states, NOW)
    assert set(due) == {State.QUEUED}  # nothing downloading: no entry
    assert due[State.QUEUED] == 0.0  # a new job is due at once, past the 5 claimed
    later = store.due_by_state(["c1"], states, NOW + 3600)  # the leases ran out: due again
    assert set(later) == {State.QUEUED, State.RUNNING}


def test_the_last_cost_is_the_latest_reported_by_a_live_or_a_finished_job(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "runner.db"))
    store.enqueue(campaign(n=4), now=1.0)
    first, second, third, _ = list(store.jobs("c1"))

    def move(job_id: int, **values: Any) -> None:
        with store.write() as conn:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))

    assert store.spend("c1", NOW).last_cost is None
    move(first.id, state="done", cost=2.0, finished_at=10.0, updated_at=10.0)
    move(second.id, state="failed", cost=9.0, finished_at=5.0, updated_at=5.0)
    assert store.spend("c1", NOW).last_cost == 2.0  # the last finished, not the first
    move(third.id, state="running", cost=3.0, updated_at=20.0)  # BFL: a cost at the create
    assert store.spend("c1", NOW).last_cost == 3.0
    move(third.id, updated_at=8.0)
    assert store.spend("c1", NOW).last_cost == 2.0
    store.close()
