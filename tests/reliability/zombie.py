"""The writes of a worker that was only paused, made as it wakes: the database must refuse them.

A worker paused past its leases (SIGSTOP, a laptop that slept, a suspended VM) wakes holding
jobs it no longer owns, and writes what it was about to write from what it last knew: another
worker has the job now, or the job has moved on since. The store's guard refuses both: a
change is written only while the job is in the state the writer expects *and* still the
writer's (`UPDATE ... WHERE state = :expected AND lease_owner = :me`). The chaos run and the
many-worker tests make these writes through runner's own store at their worst moments (right
after a kill, while other workers hold the jobs) and report every one that got through.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from runner.states import MOVES, TERMINAL, Change, Job, State
from runner.store import Store

ZOMBIE = "zombie-host:1:000000"  # a worker that holds nothing
MARK = "written by a worker that did not hold the job"


def _stale_state(job: Job) -> State:
    """A state the job is not in and cannot come to while the write is made: the write
    expecting it must fail whoever else writes meanwhile."""
    return State.UNCERTAIN if job.state in TERMINAL else State.EXPIRED


def stale_writes(store: Store, jobs: Iterable[Job]) -> list[str]:
    """Two writes for each job, both of which must be refused; what got through.

    - another worker's: the job's state as it is now, the lease owner a worker not holding it;
    - an old view: the job's lease owner as it is now (or none), a state it is not in.
    """
    problems = []
    for job in jobs:
        moves = MOVES[job.state]
        if moves:
            to = job.state if job.state in moves else sorted(moves)[0]
            change = Change(job.id, job.state, to, {"error": MARK})
            if store.apply(change, owner=ZOMBIE):
                problems.append(f"job {job.key}: a write by a worker not holding it was accepted")
        stale = _stale_state(job)
        change = Change(job.id, stale, sorted(MOVES[stale])[0], {"error": MARK})
        if store.apply(change, owner=job.lease_owner):
            problems.append(
                f"job {job.key}: a write expecting {stale.value} was accepted while it was "
                f"{job.state.value}"
            )
    return problems


def sample(store: Store, campaign: str, rng: random.Random, k: int) -> list[Job]:
    """Up to `k` of the campaign's jobs, the ones being worked on first."""
    every = list(store.jobs(campaign))
    busy = [j for j in every if j.state not in TERMINAL and j.state is not State.QUEUED]
    rest = [j for j in every if j not in busy]
    rng.shuffle(rest)
    return (busy + rest)[:k]
