"""The poll schedule learns each model's generation times from finished jobs, in the database.

Against the simulator, over real sockets: what the runner records is when each result became
ready (as its looks tell), close to the simulator's own record and earlier than the moment it
was seen, and a later worker reads it back.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from runner import app
from runner.campaign import ProviderConfig
from runner.simulator import SimConfig, running_in_thread
from runner.store import Store, open_store
from runner.worker.pool import PoolOptions, RunReport
from tests.factories import campaign, finished_history

KEY = "learning-test-key"
MODEL = "flux-pro-1.1"
MEDIAN, SIGMA = 0.6, 0.3


def _history(store: Store, bfl: ProviderConfig, n: int = 40) -> None:
    """Generations of the model an earlier run left, drawn like the simulator draws them."""
    rng = random.Random(3)
    took = [MEDIAN * rng.lognormvariate(0, SIGMA) for _ in range(n)]
    finished_history(store, campaign(name="history", n=n, provider=bfl, model=MODEL), took)


def test_learned_generation_times_are_when_results_became_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)
    n = 30
    with running_in_thread(config=SimConfig(duration_median=MEDIAN, duration_sigma=SIGMA)) as sim:
        bfl = ProviderConfig("bfl", "bfl", sim.url, "x-key", "RUNNER_TEST_KEY")
        store = open_store(str(tmp_path / "runner.db"))
        try:
            _history(store, bfl)
            store.enqueue(campaign(n=n, out=tmp_path / "out", provider=bfl, model=MODEL))

            async def main() -> RunReport:
                with anyio.fail_after(60):
                    return await app.work(
                        store,
                        ["c1"],
                        options=PoolOptions(tick=0.05),
                        handle_signals=False,
                        progress_every=0,
                    )

            report = anyio.run(main)
            assert app.exit_code(store, ["c1"], report) == app.EXIT_OK
            ready = {g["id"]: g["completed_at"] for g in sim.sim.stats()["generations"]}
            jobs = list(store.jobs("c1"))
        finally:
            store.close()
    # A later process reads what this one learned (newest first, before the history).
    reopened = open_store(str(tmp_path / "runner.db"))
    try:
        everything = reopened.recent_durations("bfl", MODEL)
    finally:
        reopened.close()
    assert len(jobs) == len(ready) == n
    # A look far later than planned (a stalled machine) teaches nothing; nearly all teach.
    taught = [j for j in jobs if j.generation_s is not None]
    assert len(taught) >= n - 3 and len(everything) == 40 + len(taught)
    assert sorted(everything[: len(taught)]) == sorted(j.generation_s for j in taught)  # type: ignore[type-var]
    # Per job, in the runner's own terms (from sending the create): when the simulator made
    # the result ready, when the runner saw it, and what the runner learned. Each result is
    # seen a moment after it became ready; what is learned lies before that moment (learning
    # the moment seen, or the download's end, would not) and near when it became ready. How
    # near depends on how busy the machine is: 0.02 to 0.07 s was measured, quiet or loaded.
    late, off = [], []
    for job in taught:
        assert job.submitted_at is not None and job.ready_at is not None
        assert job.generation_s is not None
        truth = ready[job.remote_id] - job.submitted_at
        seen = job.ready_at - job.submitted_at
        assert job.generation_s < seen, (job.generation_s, seen)
        late.append(seen - truth)
        off.append(abs(job.generation_s - truth))
    assert min(late) > 0
    assert sum(off) / len(off) < 0.15, sorted(off)
    assert sorted(off)[len(off) // 2] < 0.1, sorted(off)
