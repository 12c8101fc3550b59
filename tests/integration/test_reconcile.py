"""Reconciliation against the simulator over real sockets: each condition of finding a lost
create's prediction, held by a scenario that goes wrong when that condition is changed.

Each scenario puts the world as a lost create leaves it: the prediction exists at the
provider (made here with the very request the runner sends), and the job is `reconciling`
with the time of its attempt. Then the worker runs, and the simulator's own record judges:
which prediction the job holds, and how many times its input was created.

The simulator's clock is shifted to make predictions at other moments (an earlier run's, a
minute before the attempt): `Shifted` moves the simulator's clock only, never ours.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from runner.campaign import Campaign, JobSpec, ProviderConfig
from runner.simulator import SimConfig, Simulator, running_in_thread
from runner.simulator.server import SimHandle
from runner.simulator.state import canonical_json
from runner.states import State
from runner.store import Store
from runner.store.schema import jobs
from tests.factories import campaign
from tests.integration.test_worker import provider, run, states_of, store

__all__ = ["store"]  # a fixture shared with test_worker

MODEL = "black-forest-labs/flux-schnell"
KEY = "k"  # the key `run` gives the worker


class Shifted:
    """The simulator's clock, which a test can move: `shift` seconds from the real one."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


@pytest.fixture
def clock() -> Shifted:
    return Shifted()


@pytest.fixture
def sim(clock: Shifted, request: pytest.FixtureRequest) -> Iterator[SimHandle]:
    marker = request.node.get_closest_marker("sim_config")
    config = SimConfig(
        duration_median=0.1, duration_sigma=0.1, **(marker.args[0] if marker else {})
    )
    with running_in_thread(sim=Simulator(config, clock=clock)) as handle:
        yield handle


def made(sim: SimHandle, input: dict[str, Any], model: str = MODEL, ago: float = 0.0) -> str:
    """A prediction made `ago` seconds ago with this input, as the runner's create makes it."""
    clock = sim.sim._clock
    assert isinstance(clock, Shifted)
    clock.shift -= ago
    try:
        answer = httpx.post(
            f"{sim.url}/v1/models/{model}/predictions",
            json={"input": input},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
    finally:
        clock.shift += ago
    answer.raise_for_status()
    remote_id: str = answer.json()["id"]
    return remote_id


def _attempted(store: Store, key: str, name: str, submitted_at: float, **values: Any) -> None:
    """Job `key` once its create was attempted at `submitted_at`, and `values`."""
    with store.write() as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.campaign == name, jobs.c.key == key)
            .values(
                attempts=1,
                submitted_at=submitted_at,
                deadline_at=submitted_at + 7200,
                next_attempt_at=0.0,
                **values,
            )
        )


def lost(store: Store, key: str, submitted_at: float, name: str = "c1") -> None:
    """Job `key` as a create whose answer was lost leaves it: reconciling, its attempt made."""
    error = "create got no usable answer (simulated); it may have been created"
    _attempted(store, key, name, submitted_at, state=State.RECONCILING.value, error=error)


def holding(store: Store, key: str, remote_id: str, name: str = "c1") -> None:
    """Job `key` holds `remote_id`: created, answered, running."""
    _attempted(store, key, name, time.time(), state=State.RUNNING.value, remote_id=remote_id)


def job(store: Store, key: str, name: str = "c1") -> Any:
    return next(j for j in store.jobs(name) if j.key == key)


def creates_of(sim: SimHandle, input: dict[str, Any]) -> int:
    return int(sim.sim.stats()["creates_by_input"].get(canonical_json(input), 0))


def replicate(sim: SimHandle) -> ProviderConfig:
    return provider(sim, "replicate")


def same_input_campaign(out: Path, sim: SimHandle, n: int) -> Campaign:
    """`n` jobs with one input (unseeded variants of one prompt): keys differ, inputs do not."""
    base = campaign(n=1, out=out, provider=replicate(sim))
    specs = [
        JobSpec(
            key=f"v{v}",
            index=v + 1,
            model=MODEL,
            input={"prompt": "one fox"},
            meta={"prompt": "one fox", "slug": "one-fox", "variant": v},
        )
        for v in range(n)
    ]
    return Campaign(settings=base.settings, jobs=specs)


def test_the_prediction_of_a_lost_create_is_adopted(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    now = time.time()
    own = made(sim, {"prompt": "prompt 0"})
    lost(store, "k0", now)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 1}
    assert job(store, "k0").remote_id == own
    assert creates_of(sim, {"prompt": "prompt 0"}) == 1


def test_a_local_clock_stepped_back_since_the_attempt_is_covered_by_the_slack(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The attempt was stamped a minute ahead of the real time (the local clock was stepped
    # back since, by NTP or a laptop waking up): its prediction was made "before" it.
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    own = made(sim, {"prompt": "prompt 0"})
    lost(store, "k0", time.time() + 60)
    run(store, "c1", monkeypatch)
    assert job(store, "k0").remote_id == own
    assert creates_of(sim, {"prompt": "prompt 0"}) == 1  # not paid a second time


def test_an_earlier_prediction_of_the_same_input_before_the_window_is_not_adopted(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same prompt was run ten minutes ago (another tool, another database): not this
    # job's, however alike. Its own prediction is the one made at its attempt.
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    earlier = made(sim, {"prompt": "prompt 0"}, ago=600)
    own = made(sim, {"prompt": "prompt 0"})
    lost(store, "k0", time.time())
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 1}
    assert job(store, "k0").remote_id == own != earlier


def test_another_models_prediction_of_the_same_input_is_not_adopted(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A comparison matrix sends one input to two models. Model A's prediction was made just
    # before this job's (model B) create, which never happened: B is submitted again.
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    other = made(sim, {"prompt": "prompt 0"}, model="acme/other-model", ago=5)
    lost(store, "k0", time.time())
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 1}
    held = job(store, "k0").remote_id
    assert held != other
    generation = next(g for g in sim.sim.stats()["generations"] if g["id"] == held)
    assert generation["model"] == MODEL


@pytest.mark.sim_config({"list_page_size": 2})
def test_a_prediction_pages_back_is_found_by_following_next(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    now = time.time()
    own = made(sim, {"prompt": "prompt 0"})
    for i in range(5):  # newer predictions of other inputs push it to the third page
        made(sim, {"prompt": f"something else {i}"})
    lost(store, "k0", now)
    run(store, "c1", monkeypatch)
    assert job(store, "k0").remote_id == own
    assert creates_of(sim, {"prompt": "prompt 0"}) == 1
    assert sim.sim.stats()["lists"] >= 3


@pytest.mark.sim_config({"list_page_size": 1})
def test_a_window_of_more_pages_than_runner_reads_is_uncertain_not_resent(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    now = time.time()
    made(sim, {"prompt": "prompt 0"})
    for i in range(55):  # more pages than MAX_LIST_PAGES (50) stand between now and it
        made(sim, {"prompt": f"something else {i}"})
    lost(store, "k0", now)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 1}
    assert "pages" in (job(store, "k0").error or "")
    assert creates_of(sim, {"prompt": "prompt 0"}) == 1


def test_an_attempt_older_than_the_providers_retention_is_uncertain_not_resent(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Killed two hours ago mid-create (a laptop that slept): whatever it made has lost its
    # input at Replicate since, so "no match" would mean nothing.
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    lost(store, "k0", time.time() - 7200)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 1}
    assert "keeps the inputs" in (job(store, "k0").error or "")
    assert creates_of(sim, {"prompt": "prompt 0"}) == 0


@pytest.mark.sim_config({"replicate_output_ttl": 0.0})
def test_a_prediction_whose_data_was_removed_in_the_window_makes_it_uncertain(
    sim: SimHandle, store: Store, tmp_path: Path, clock: Shifted, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    now = time.time()
    removed = made(sim, {"prompt": "prompt 0"})
    clock.shift += 5  # it has finished, and its data is gone (at once, with this config)
    lost(store, "k0", now)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 1}
    assert removed in (job(store, "k0").error or "")
    assert creates_of(sim, {"prompt": "prompt 0"}) == 1


def test_identical_inputs_take_their_predictions_one_to_one_oldest_first(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three unseeded variants: v2 got its answer (holds its prediction), v0 and v1 did not.
    store.enqueue(same_input_campaign(tmp_path, sim, 3))
    now = time.time()
    first = made(sim, {"prompt": "one fox"})
    second = made(sim, {"prompt": "one fox"})
    third = made(sim, {"prompt": "one fox"})
    holding(store, "v2", third)
    lost(store, "v0", now)
    lost(store, "v1", now + 0.01)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 3}
    assert [job(store, f"v{v}").remote_id for v in range(3)] == [first, second, third]
    assert creates_of(sim, {"prompt": "one fox"}) == 3  # nothing made twice, nothing orphaned


def test_of_identical_inputs_the_attempts_without_a_prediction_are_submitted_again(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three creates of one input lost their answers; only one reached the provider.
    store.enqueue(same_input_campaign(tmp_path, sim, 3))
    now = time.time()
    only = made(sim, {"prompt": "one fox"})
    for v in range(3):
        lost(store, f"v{v}", now + v * 0.01)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 3}
    held = [job(store, f"v{v}").remote_id for v in range(3)]
    assert held[0] == only and len(set(held)) == 3
    assert creates_of(sim, {"prompt": "one fox"}) == 3


def test_a_prediction_no_attempt_explains_makes_the_job_uncertain_with_the_candidates(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two free predictions of its input since its attempt, for one job: which is its own?
    store.enqueue(campaign(n=1, out=tmp_path, provider=replicate(sim)))
    now = time.time()
    one = made(sim, {"prompt": "prompt 0"})
    two = made(sim, {"prompt": "prompt 0"})
    lost(store, "k0", now)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 1}
    error = job(store, "k0").error or ""
    assert one in error and two in error and "runner retry c1 --uncertain" in error
    assert creates_of(sim, {"prompt": "prompt 0"}) == 2


def test_the_store_refuses_to_give_one_prediction_to_two_jobs(db_url: str) -> None:
    from runner.states import Change
    from runner.store import open_store

    store = open_store(db_url)
    try:
        store.enqueue(campaign(n=2))
        one, two = sorted(store.jobs("c1"), key=lambda j: j.key)
        for j in (one, two):
            lost(store, j.key, time.time())
        give = {"remote_id": "p-1", "attempts": 1}
        assert store.apply(Change(one.id, State.RECONCILING, State.RUNNING, give), owner=None)
        assert not store.apply(Change(two.id, State.RECONCILING, State.RUNNING, give), owner=None)
        assert job(store, "k1").state is State.RECONCILING and job(store, "k1").remote_id is None
        # the job that holds it may be written as usual, its prediction with it
        again = {"remote_id": "p-1", "polls": 1}
        assert store.apply(Change(one.id, State.RUNNING, State.RUNNING, again), owner=None)
    finally:
        store.close()


def test_two_writers_giving_one_prediction_to_two_jobs_at_once_never_both_win(db_url: str) -> None:
    """Two workers adopting the same listed prediction for two jobs at the same moment: on
    PostgreSQL each transaction would see the prediction free without the per-prediction lock."""
    import threading

    from runner.states import Change
    from runner.store import open_store

    store = open_store(db_url)
    try:
        rounds = 15
        store.enqueue(campaign(n=2 * rounds))
        pairs = sorted(store.jobs("c1"), key=lambda j: j.index)
        for j in pairs:
            lost(store, j.key, time.time())
        for r in range(rounds):
            one, two = pairs[2 * r], pairs[2 * r + 1]
            barrier = threading.Barrier(2)
            won: list[bool] = []

            def adopt(
                job_id: int, remote_id: str, gate: threading.Barrier, out: list[bool]
            ) -> None:
                give = {"remote_id": remote_id, "attempts": 1}
                change = Change(job_id, State.RECONCILING, State.RUNNING, give)
                gate.wait(timeout=10)
                out.append(store.apply(change, owner=None))

            threads = [
                threading.Thread(target=adopt, args=(j.id, f"p-{r}", barrier, won))
                for j in (one, two)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert sorted(won) == [False, True], (r, won)
        holders = [j.remote_id for j in store.jobs("c1") if j.remote_id]
        assert len(holders) == len(set(holders)) == rounds
    finally:
        store.close()
