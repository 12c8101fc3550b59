"""The store against real SQLite files: idempotent enqueue, claims, guarded moves, recovery."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.states import Change, State
from runner.store import DatabaseError, open_store
from runner.store.store import Store
from tests.factories import campaign


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def test_database_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.db"
    store = open_store(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    store.close()


def test_opening_a_missing_database_without_create_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no runner database"):
        open_store(str(tmp_path / "nope.db"), create=False)
    assert not (tmp_path / "nope.db").exists()


def test_enqueue_is_idempotent_and_adds_only_new_jobs(store: Store) -> None:
    first = store.enqueue(campaign(n=3))
    assert (first.added, first.existing) == (3, 0)
    again = store.enqueue(campaign(n=3))
    assert (again.added, again.existing) == (0, 3)
    grown = store.enqueue(campaign(n=5))
    assert (grown.added, grown.existing) == (2, 3)
    assert store.counts()["c1"] == {"queued": 5}
    assert store.count_new(campaign(n=7)) == 2


def test_enqueue_gives_back_the_page_cache_it_enlarged(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "r.db"))
    with store.read() as conn:
        before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    store.enqueue(campaign(n=3))
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == before
    assert store.engine.pool.checkedin() == 1  # the one connection the enqueue used
    store.close()


def test_claim_leases_each_job_once(store: Store) -> None:
    store.enqueue(campaign(n=5))
    a = store.claim(State.QUEUED, ["c1"], owner="a", now=10.0, lease_seconds=30, limit=3)
    b = store.claim(State.QUEUED, ["c1"], owner="b", now=10.0, lease_seconds=30, limit=10)
    assert len(a) == 3 and len(b) == 2
    assert not {j.id for j in a} & {j.id for j in b}
    assert all(j.lease_owner == "a" for j in a)
    # An expired lease is taken back by the next claim.
    c = store.claim(State.QUEUED, ["c1"], owner="c", now=100.0, lease_seconds=30, limit=10)
    assert len(c) == 5


def test_claims_from_threads_never_overlap(db_url: str) -> None:
    db = db_url
    first = open_store(db)
    first.enqueue(campaign(n=200))
    first.close()
    seen: list[int] = []
    lock = threading.Lock()

    def claimer(owner: str) -> None:
        s = open_store(db)
        while True:
            got = s.claim(State.QUEUED, ["c1"], owner=owner, now=1.0, lease_seconds=60, limit=7)
            if not got:
                break
            with lock:
                seen.extend(j.id for j in got)
        s.close()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(seen) == 200 and len(set(seen)) == 200


def test_apply_refuses_a_move_from_the_wrong_state_or_owner(store: Store) -> None:
    store.enqueue(campaign(n=1))
    (job,) = store.claim(State.QUEUED, ["c1"], owner="me", now=1.0, lease_seconds=30, limit=1)
    move = Change(job.id, State.QUEUED, State.SUBMITTING, {"attempts": 1})
    assert not store.apply(move, owner="someone-else")
    assert store.apply(move, owner="me", release=False)
    assert not store.apply(move, owner="me")  # no longer queued
    (now_job,) = list(store.jobs("c1"))
    assert now_job.state is State.SUBMITTING and now_job.attempts == 1
    assert now_job.lease_owner == "me"


def test_orphaned_submits_are_reconciled_only_after_their_lease(store: Store) -> None:
    store.enqueue(campaign(n=2))
    jobs = store.claim(State.QUEUED, ["c1"], owner="me", now=1.0, lease_seconds=30, limit=2)
    for job in jobs:
        store.apply(Change(job.id, State.QUEUED, State.SUBMITTING), owner="me", release=False)
    assert store.mark_orphaned_submits(now=10.0) == 0
    assert store.mark_orphaned_submits(now=100.0) == 2
    assert store.counts()["c1"] == {"reconciling": 2}
    assert all("billed" in (j.error or "") for j in store.jobs("c1"))


def test_dead_owners_leases_are_released(store: Store) -> None:
    store.enqueue(campaign(n=3))
    store.claim(State.QUEUED, ["c1"], owner="dead", now=1.0, lease_seconds=1000, limit=2)
    store.claim(State.QUEUED, ["c1"], owner="alive", now=1.0, lease_seconds=1000, limit=1)
    assert store.release_leases_of(lambda owner: owner == "dead") == 2
    again = store.claim(State.QUEUED, ["c1"], owner="new", now=2.0, lease_seconds=10, limit=10)
    assert len(again) == 2


def test_user_retry_moves_only_the_asked_states(store: Store) -> None:
    store.enqueue(campaign(n=3))
    jobs = store.claim(State.QUEUED, ["c1"], owner="me", now=1.0, lease_seconds=30, limit=3)
    store.apply(Change(jobs[0].id, State.QUEUED, State.CANCELED), owner="me")
    store.apply(Change(jobs[1].id, State.QUEUED, State.SUBMITTING), owner="me")
    store.apply(Change(jobs[1].id, State.SUBMITTING, State.RECONCILING), owner=None)
    store.apply(Change(jobs[1].id, State.RECONCILING, State.UNCERTAIN), owner=None)
    assert store.retry("c1", {State.FAILED}) == 0
    assert store.retry("c1", {State.CANCELED}) == 1
    assert store.retry("c1", {State.UNCERTAIN}) == 1
    assert store.counts()["c1"] == {"queued": 3}


def test_jobs_are_read_in_batches_in_order(store: Store) -> None:
    store.enqueue(campaign(n=25))
    keys = [j.key for j in store.jobs("c1", batch=7)]
    assert keys == [f"k{i}" for i in range(25)]


def test_account_facts_are_merged_and_kept(db_url: str) -> None:
    """What is learned of a provider account survives the store being closed and reopened,
    and each fact learned later is laid over the earlier ones, not in their place."""
    store = open_store(db_url)
    key = "replicate:https://api.example.com/replicate:EXAMPLE_KEY"
    assert store.account_facts(key) == {}
    store.learn_account(key, {"unsupported": ["list"]}, now=1.0)
    store.learn_account(key, {"clock_offset": -300.5}, now=2.0)
    store.learn_account("other", {"unsupported": ["cancel"]}, now=3.0)
    store.close()
    store = open_store(db_url)
    assert store.account_facts(key) == {"unsupported": ["list"], "clock_offset": -300.5}
    assert store.account_facts("other") == {"unsupported": ["cancel"]}
    store.close()
