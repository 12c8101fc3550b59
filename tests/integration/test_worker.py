"""The worker pool against the simulator over real sockets, in this process.

Each test runs a small campaign through `runner.app.work` and checks where every job ended and
what the simulator saw.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner import app
from runner.campaign import Limits, ProviderConfig
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.server import SimHandle
from runner.states import State
from runner.store import Store, open_store
from runner.worker.pool import PoolOptions
from tests.factories import campaign

FAST = SimConfig(duration_median=0.1, duration_sigma=0.1)


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    with running_in_thread(config=FAST) as handle:
        yield handle


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "runner.db"))
    yield s
    s.close()


def provider(sim: SimHandle, style: str = "bfl") -> ProviderConfig:
    if style == "bfl":
        return ProviderConfig("bfl", "bfl", sim.url, "x-key", "RUNNER_TEST_KEY")
    return ProviderConfig("replicate", "replicate", sim.url, "bearer", "RUNNER_TEST_KEY")


def run(store: Store, name: str, monkeypatch: pytest.MonkeyPatch, key: str = "k") -> Any:
    monkeypatch.setenv("RUNNER_TEST_KEY", key)
    options = PoolOptions(tick=0.05)

    async def main() -> Any:
        with anyio.fail_after(60):
            return await app.work(
                store, [name], options=options, handle_signals=False, progress_every=0
            )

    return anyio.run(main)


def states_of(store: Store, name: str = "c1") -> dict[str, int]:
    return store.counts(name).get(name, {})


def test_every_job_done_within_the_in_flight_limit(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(
        campaign(n=30, out=tmp_path / "out", provider=provider(sim), limits=Limits(max_in_flight=4))
    )
    report = run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 30}
    assert app.exit_code(store, ["c1"], report) == app.EXIT_OK
    stats = sim.sim.stats()
    assert stats["creates"] == 30
    assert max(stats["max_in_flight_seen"].values()) <= 4
    images = [p for p in (tmp_path / "out").iterdir() if p.suffix != ".json"]
    assert len(images) == 30
    assert all(p.with_name(p.name + ".json").exists() for p in images)  # provenance beside each


def test_outcomes_are_recorded_with_their_reason(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config({"faults": {"create": {"fail_rate": 0.3, "moderate_rate": 0.3}}})
    store.enqueue(campaign(n=30, out=tmp_path / "out", provider=provider(sim)))
    report = run(store, "c1", monkeypatch)
    counts = states_of(store)
    assert set(counts) == {"done", "failed", "moderated"}, counts
    assert sum(counts.values()) == 30
    assert app.exit_code(store, ["c1"], report) == app.EXIT_JOBS_FAILED
    for job in store.jobs("c1", [State.FAILED, State.MODERATED]):
        assert job.error and job.finished_at
    assert sim.sim.stats()["creates"] == 30  # a refused generation is not retried by itself


def test_a_wrong_key_stops_the_campaign_and_loses_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(duration_median=0.1, api_keys=["right-key"])
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign(n=5, out=tmp_path / "out", provider=provider(sim)))
        report = run(store, "c1", monkeypatch, key="wrong-key")
        assert report.halted and "API key" in report.halted["c1"]
        assert states_of(store) == {"queued": 5}
        assert app.exit_code(store, ["c1"], report) == app.EXIT_STOPPED
        assert all(job.attempts == 0 for job in store.jobs("c1"))
        # With the right key, the same queue finishes.
        run(store, "c1", monkeypatch, key="right-key")
        assert states_of(store) == {"done": 5}


def test_bfl_create_with_no_usable_answer_stays_uncertain_until_the_user_says(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config({"faults": {"create": {"drop_after_create_rate": 1.0}}})
    store.enqueue(campaign(n=3, out=tmp_path / "out", provider=provider(sim, "bfl")))
    report = run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 3}
    assert app.exit_code(store, ["c1"], report) == app.EXIT_JOBS_FAILED
    assert sim.sim.stats()["creates"] == 3  # created once each, never again
    # the hint is a command that can be pasted as it is
    assert all("`runner retry c1 --uncertain`" in (j.error or "") for j in store.jobs("c1"))
    # Only the user's say-so sends them again (and pays again).
    sim.sim.update_config({"faults": {"create": {"drop_after_create_rate": 0.0}}})
    assert store.retry("c1", {State.UNCERTAIN}) == 3
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 3}
    assert sim.sim.stats()["creates"] == 6


def test_replicate_create_with_no_usable_answer_is_reconciled_not_resent(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config({"faults": {"create": {"drop_after_create_rate": 1.0}}})
    store.enqueue(campaign(n=3, out=tmp_path / "out", provider=provider(sim, "replicate")))
    report = run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 3}
    assert app.exit_code(store, ["c1"], report) == app.EXIT_OK
    stats = sim.sim.stats()
    assert stats["creates"] == 3 and stats["dropped_creates"] == 3
    assert stats["lists"] >= 1
    # Each job adopted the very prediction its lost create made.
    assert {j.remote_id for j in store.jobs("c1")} == {g["id"] for g in stats["generations"]}


def test_replicate_create_that_never_happened_is_resent_after_listing(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 503 before anything was created: maybe billed as far as the runner knows, so it
    # lists first, finds nothing, and only then submits again.
    sim.sim.update_config({"faults": {"create": {"error_rate": 1.0, "error_status": 503}}})
    store.enqueue(campaign(n=2, out=tmp_path / "out", provider=provider(sim, "replicate")))

    async def lift_fault_after_first_creates() -> None:
        while sim.sim.stats()["status_codes"].get("503", 0) < 2:
            await anyio.sleep(0.02)
        sim.sim.update_config({"faults": {"create": {"error_rate": 0.0}}})

    monkeypatch.setenv("RUNNER_TEST_KEY", "k")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lift_fault_after_first_creates)
            with anyio.fail_after(60):
                await app.work(
                    store,
                    ["c1"],
                    options=PoolOptions(tick=0.05),
                    handle_signals=False,
                    progress_every=0,
                )

    anyio.run(main)
    assert states_of(store) == {"done": 2}
    stats = sim.sim.stats()
    assert stats["creates"] == 2 and stats["lists"] >= 2
    assert set(stats["creates_by_input"].values()) == {1}


def test_rate_limits_and_server_errors_on_queries_are_retried(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config({"faults": {"get": {"error_rate": 0.4, "error_status": 503}}})
    store.enqueue(campaign(n=10, out=tmp_path / "out", provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 10}
    stats = sim.sim.stats()
    assert stats["status_codes"].get("503", 0) > 0
    assert stats["creates"] == 10


def test_deadline_expires_a_job_that_takes_too_long(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_in_thread(config=SimConfig(duration_median=30, duration_sigma=0.0)) as sim:
        spec = campaign(n=2, out=tmp_path / "out", provider=provider(sim))
        settings = spec.settings.__class__(**{**spec.settings.__dict__, "deadline_seconds": 0.5})
        store.enqueue(spec.__class__(settings=settings, jobs=spec.jobs))
        run(store, "c1", monkeypatch)
    assert states_of(store) == {"expired": 2}
    assert all("deadline" in (j.error or "") for j in store.jobs("c1"))


@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_a_result_found_ready_is_downloaded_without_going_back_to_the_queue(
    sim: SimHandle,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    style: str,
) -> None:
    # BFL: the poll that finds it ready; Replicate: the `Prefer: wait` create that answers it
    config = provider(sim, style)
    if style == "replicate":
        config = dataclasses.replace(config, prefer_wait=10)
    store.enqueue(campaign(n=12, out=tmp_path / "out", provider=config))
    claimed: list[State] = []
    asked: list[State] = []
    claim = store.claim

    def watched(state: State, *args: Any, **kwargs: Any) -> Any:
        asked.append(state)
        jobs = claim(state, *args, **kwargs)
        claimed.extend(state for _ in jobs)
        return jobs

    monkeypatch.setattr(store, "claim", watched)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 12}
    assert State.DOWNLOADING not in claimed  # every download ran on from the look that found it
    # ... and no round of claims took those downloads, held by its own tasks, for due ones: a
    # claim that finds nothing, queued behind the writes, at every round
    assert State.DOWNLOADING not in asked
    if style == "bfl":
        assert claimed.count(State.RUNNING) >= 12  # the polls themselves were claimed


def test_downloaded_files_are_recorded_with_their_hash(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=4, out=tmp_path / "out", provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    served = set(sim.sim.stats()["files"].values())
    for job in store.jobs("c1"):
        (record,) = job.files
        assert Path(record["path"]).parent == tmp_path / "out"
        assert record["sha256"] in served
        assert json.dumps(record)  # plain JSON in the database


def test_the_jobs_deadline_goes_out_as_cancel_after(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = campaign(n=2, out=tmp_path / "out", provider=provider(sim, "replicate"))
    settings = spec.settings.__class__(**{**spec.settings.__dict__, "deadline_seconds": 90.0})
    store.enqueue(spec.__class__(settings=settings, jobs=spec.jobs))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 2}
    for record in sim.sim.stats()["generations"]:
        assert record["deadline"] - record["created_at"] == pytest.approx(90, abs=2)


def test_without_a_deadline_no_cancel_after_is_sent(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=1, out=tmp_path / "out", provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    (record,) = sim.sim.stats()["generations"]
    assert record["deadline"] is None


def test_campaigns_on_one_account_share_its_slots_by_priority(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def settings_with_priority(spec: Any, priority: int) -> Any:
        settings = spec.settings.__class__(**{**spec.settings.__dict__, "priority": priority})
        return spec.__class__(settings=settings, jobs=spec.jobs)

    limits = Limits(max_in_flight=4)
    high = campaign("high", n=24, out=tmp_path / "h", provider=provider(sim), limits=limits)
    low = campaign("low", n=24, out=tmp_path / "l", provider=provider(sim), limits=limits)
    store.enqueue(settings_with_priority(high, 30))
    store.enqueue(settings_with_priority(low, 10))
    monkeypatch.setenv("RUNNER_TEST_KEY", "k")

    async def main() -> None:
        with anyio.fail_after(60):
            await app.work(
                store,
                ["high", "low"],
                options=PoolOptions(tick=0.05),
                handle_signals=False,
                progress_every=0,
            )

    anyio.run(main)
    assert states_of(store, "high") == {"done": 24} and states_of(store, "low") == {"done": 24}
    # One account: 4 slots in all, not 4 each.
    assert max(sim.sim.stats()["max_in_flight_seen"].values()) <= 4
    # While both had work, the higher priority got about three slots for each one of the other.
    high_done = max(j.submitted_at or 0 for j in store.jobs("high"))
    low_before = sum(1 for j in store.jobs("low") if (j.submitted_at or 0) < high_done)
    assert 3 <= low_before <= 12  # about 24 / 3, and never starved
