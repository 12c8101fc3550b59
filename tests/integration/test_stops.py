"""A stopping worker, in this process, against the simulator over real sockets: it follows every
created job of its campaigns (a dead worker's too, once its lease ran out) and never the queue,
and when the grace ends first it says what is left and leaves the store consistent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from runner import app
from runner.campaign import Limits, ProviderConfig
from runner.simulator import SimConfig, running_in_thread
from runner.states import State
from runner.store import Store, open_store
from runner.store.schema import jobs
from runner.worker.pool import PoolOptions, RunReport
from tests.factories import campaign

KEY = "k"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "runner.db"))
    yield s
    s.close()


def bfl(url: str) -> ProviderConfig:
    return ProviderConfig("bfl", "bfl", url, "x-key", "RUNNER_TEST_KEY")


def replicate(url: str) -> ProviderConfig:
    return ProviderConfig("replicate", "replicate", url, "bearer", "RUNNER_TEST_KEY")


def create_at_provider(url: str, body: dict[str, Any]) -> tuple[str, str]:
    """A BFL prediction created behind the runner's back, as a worker that died would have."""
    answer = httpx.post(f"{url}/v1/flux-pro-1.1", json=body, headers={"x-key": KEY}, timeout=10)
    answer.raise_for_status()
    return answer.json()["id"], answer.json()["polling_url"]


def set_job(store: Store, name: str, key: str, **values: Any) -> None:
    with store.write() as conn:
        conn.execute(
            sa.update(jobs).where(jobs.c.campaign == name, jobs.c.key == key).values(**values)
        )


def stopped_work(
    store: Store, names: list[str], grace: float, monkeypatch: pytest.MonkeyPatch
) -> RunReport:
    """Work `names` under a stop asked for before the worker starts."""
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)

    async def main() -> RunReport:
        with anyio.fail_after(60):
            async with app.stopping(grace, handle_signals=False) as stops:
                stops.ask("test")
                return await app.work(
                    store, names, options=PoolOptions(tick=0.05), progress_every=0, stops=stops
                )

    return anyio.run(main)


def running(
    store: Store, name: str, key: str, prediction: tuple[str, str], submitted_at: float
) -> None:
    remote_id, polling_url = prediction
    set_job(
        store,
        name,
        key,
        state=State.RUNNING.value,
        remote_id=remote_id,
        polling_url=polling_url,
        submitted_at=submitted_at,
        deadline_at=submitted_at + 3600,
        next_attempt_at=submitted_at,
    )


def by_key(store: Store, name: str) -> dict[str, Any]:
    return {job.key: job for job in store.jobs(name)}


def test_a_stop_follows_every_created_job_and_leaves_the_queue(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(duration_median=0.5, duration_sigma=0.1)
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign("c1", n=5, out=tmp_path / "c1", provider=bfl(sim.url)))
        store.enqueue(
            campaign(
                "c2",
                n=2,
                out=tmp_path / "c2",
                provider=replicate(sim.url),
                limits=Limits(max_in_flight=4),
            )
        )
        now = time.time()
        # c1: three predictions created by a worker on another machine whose lease ran out.
        for i in range(3):
            prediction = create_at_provider(sim.url, {"prompt": f"prompt {i}"})
            running(store, "c1", f"k{i}", prediction, now - 1)
            set_job(store, "c1", f"k{i}", lease_owner="elsewhere:1:dead00", lease_expires_at=now)
        # c2: two creates that got no answer, and never reached the provider.
        for i in range(2):
            set_job(
                store,
                "c2",
                f"k{i}",
                state=State.RECONCILING.value,
                attempts=1,
                submitted_at=now - 1,
                next_attempt_at=now,
            )
        report = stopped_work(store, ["c1", "c2"], 60.0, monkeypatch)
        stats = sim.sim.stats()

    c1, c2 = by_key(store, "c1"), by_key(store, "c2")
    assert [c1[f"k{i}"].state for i in range(5)] == [State.DONE] * 3 + [State.QUEUED] * 2
    assert all(Path(f["path"]).exists() for i in range(3) for f in c1[f"k{i}"].files)
    # Found never created: queued again, and left to the next run (nothing new is created).
    assert [c2[f"k{i}"].state for i in range(2)] == [State.QUEUED] * 2
    assert stats["creates"] == 3 and stats["lists"] >= 1
    assert all(job.lease_owner is None for job in [*c1.values(), *c2.values()])
    assert report.stopped_early and report.stopped_by == "test"
    assert app.exit_code(store, ["c1", "c2"], report) == app.EXIT_STOPPED
    assert store.workers() == []


def test_when_the_grace_ends_first_it_says_what_is_left(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = SimConfig(duration_median=30.0, duration_sigma=0.01)
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign("c1", n=4, out=tmp_path / "c1", provider=bfl(sim.url)))
        now = time.time()
        for i in range(2):
            prediction = create_at_provider(sim.url, {"prompt": f"prompt {i}"})
            running(store, "c1", f"k{i}", prediction, now - 1)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="runner"):
            report = stopped_work(store, ["c1"], 1.0, monkeypatch)
        took = time.monotonic() - started

    assert 1.0 <= took < 5.0, took  # the grace, not the 30 s generations
    warnings = [r.getMessage() for r in caplog.records if "grace ended" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert (
        "2 created jobs not saved yet" in warnings[0]
        and "run the same command again" in (warnings[0])
    )
    jobs_ = by_key(store, "c1")
    assert [jobs_[f"k{i}"].state for i in range(4)] == [State.RUNNING] * 2 + [State.QUEUED] * 2
    assert all(job.lease_owner is None for job in jobs_.values())
    assert report.stopped_early


def test_jobs_created_after_the_stop_are_left_to_the_workers_creating_them(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker goes on with the campaign: the stopping one waits for what was created
    by its stop, not for the other's new creates (there would always be more)."""
    with running_in_thread(config=SimConfig(duration_median=0.3, duration_sigma=0.1)) as sim:
        store.enqueue(campaign("c1", n=4, out=tmp_path / "c1", provider=bfl(sim.url)))
        now = time.time()
        for i in range(2):
            running(store, "c1", f"k{i}", create_at_provider(sim.url, {"prompt": f"p{i}"}), now)
        httpx.post(f"{sim.url}/_sim/config", json={"duration_median": 30.0}).raise_for_status()
        for i in range(2, 4):  # created by the other worker after the stop
            prediction = create_at_provider(sim.url, {"prompt": f"p{i}"})
            running(store, "c1", f"k{i}", prediction, now + 30)
        started = time.monotonic()
        stopped_work(store, ["c1"], 60.0, monkeypatch)
        took = time.monotonic() - started

    states = {key: job.state for key, job in by_key(store, "c1").items()}
    assert states == {"k0": State.DONE, "k1": State.DONE, "k2": State.RUNNING, "k3": State.RUNNING}
    assert took < 10.0, took  # not the other worker's 30 s generations


def test_what_a_stop_waits_for_is_counted_from_the_jobs(db_url: str) -> None:
    from runner.stopping import CREATED

    s = open_store(db_url)
    try:
        s.enqueue(campaign("a", n=6))
        s.enqueue(campaign("b", n=2))
        for key, state, at in [
            ("k0", State.SUBMITTING, 10.0),
            ("k1", State.RUNNING, 20.0),
            ("k2", State.DOWNLOADING, 30.0),
            ("k3", State.RECONCILING, None),  # when is not known: waited for
            ("k4", State.RUNNING, 31.0),  # created after the stop at 30
            ("k5", State.DONE, 5.0),
        ]:
            set_job(s, "a", key, state=state.value, submitted_at=at)
        set_job(s, "b", "k0", state=State.RUNNING.value, submitted_at=1.0)
        assert s.count_created_by(["a"], CREATED, 30.0) == 4
        assert s.count_created_by(["a", "b"], CREATED, 30.0) == 5
        assert s.count_created_by(["a"], CREATED, 100.0) == 5
        assert s.count_created_by([], CREATED, 100.0) == 0
    finally:
        s.close()
