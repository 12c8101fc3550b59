"""`runner cancel` and `reuse: true`, against the simulator over real sockets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from runner import app
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.server import SimHandle
from runner.store import Store
from runner.worker.pool import PoolOptions
from tests.factories import campaign
from tests.integration.test_worker import provider, run, sim, states_of, store

__all__ = ["sim", "store"]


@pytest.mark.parametrize("style", ["replicate", "bfl"])
def test_cancel_stops_remote_work_where_it_can_and_the_queue_everywhere(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    monkeypatch.setenv("RUNNER_TEST_KEY", "k")
    config = SimConfig(duration_median=60.0, duration_sigma=0.0)
    with running_in_thread(config=config) as sim:
        from runner.campaign import Limits

        store.enqueue(campaign(n=6, out=tmp_path, provider=provider(sim, style), limits=Limits(3)))

        async def start_some() -> None:
            # Work until 3 jobs run at the provider, then stop like a killed process would not:
            # the leases are released, the predictions keep running remotely.
            with anyio.move_on_after(3):
                await app.work(
                    store,
                    ["c1"],
                    options=PoolOptions(tick=0.05),
                    handle_signals=False,
                    progress_every=0,
                )

        anyio.run(start_some)
        assert states_of(store) == {"running": 3, "queued": 3}
        report = anyio.run(lambda: app.cancel(store, "c1"))
        stats = sim.sim.stats()
    assert states_of(store) == {"canceled": 6}
    assert report.canceled == 6
    if style == "replicate":
        assert report.remote == 3 and stats["cancels"] == 3
    else:  # BFL has no cancel: local work stops, nothing is sent
        assert report.remote == 0 and stats["cancels"] == 0
    assert all(j.error == "canceled by the user" for j in store.jobs("c1"))


def test_reuse_takes_the_files_of_an_identical_done_job(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = {"seed": 42}
    store.enqueue(
        campaign("first", n=3, out=tmp_path / "a", provider=provider(sim), input_extra=seeded)
    )
    run(store, "first", monkeypatch)
    assert sim.sim.stats()["creates"] == 3

    # Same provider, model and seeded input, in another campaign that asks for reuse; plus
    # one job that is new.
    second = campaign(
        "second",
        n=4,
        out=tmp_path / "b",
        provider=provider(sim),
        input_extra=seeded,
        meta_extra={"reuse": True},
    )
    store.enqueue(second)
    run(store, "second", monkeypatch)
    assert states_of(store, "second") == {"done": 4}
    assert sim.sim.stats()["creates"] == 4  # only the new one was generated
    reused = [j for j in store.jobs("second") if "reused_from" in j.meta]
    assert len(reused) == 3
    first = {j.key: j for j in store.jobs("first")}
    for job in reused:
        source = first[job.meta["reused_from"]["key"]]
        (mine,), (theirs,) = job.files, source.files
        assert mine["sha256"] == theirs["sha256"]
        assert Path(mine["path"]).parent == tmp_path / "b"
        data = Path(mine["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == theirs["sha256"]


def test_no_reuse_without_a_fixed_seed_or_without_asking(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign("first", n=2, out=tmp_path / "a", provider=provider(sim)))
    run(store, "first", monkeypatch)
    unseeded = campaign(
        "second", n=2, out=tmp_path / "b", provider=provider(sim), meta_extra={"reuse": True}
    )
    store.enqueue(unseeded)
    store.enqueue(
        campaign("third", n=2, out=tmp_path / "c", provider=provider(sim), input_extra={"seed": 1})
    )
    run(store, "second", monkeypatch)
    run(store, "third", monkeypatch)
    assert sim.sim.stats()["creates"] == 6
