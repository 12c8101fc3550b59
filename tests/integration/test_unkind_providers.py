"""Never pay twice, never lose a paid result, against providers that behave like the real ones.

Each test gives the simulator (over real sockets) one unkind behaviour of a real API, runs a
small campaign through the worker, and judges by the simulator's own record: how many times
each input was created, and whether every prediction made is held by a job (none paid for and
walked away from). Each failed on the code before these behaviours were handled.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.campaign import Campaign, JobSpec, ProviderConfig
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.server import SimHandle
from runner.simulator.state import canonical_json
from runner.store import Store
from tests.factories import campaign
from tests.integration.test_worker import provider, run, states_of, store

__all__ = ["store"]  # a fixture shared with test_worker

LOST_ONCE = {"drop_after_create_rate": 1.0, "times": 1}  # each prompt's first answer is lost


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimHandle]:
    marker = request.node.get_closest_marker("sim_config")
    settings: dict[str, Any] = {"duration_median": 0.1, "duration_sigma": 0.1}
    settings.update(marker.args[0] if marker else {})
    with running_in_thread(config=SimConfig.from_dict(settings)) as handle:
        yield handle


def money(sim: SimHandle, store: Store, name: str = "c1") -> dict[str, Any]:
    """Creates beyond the jobs that have each input, predictions held by two jobs, and
    predictions no job holds."""
    stats = sim.sim.stats()
    rows = list(store.jobs(name))
    jobs_of = Counter(canonical_json(j.input) for j in rows)
    extra = sum(max(0, n - jobs_of[key]) for key, n in stats["creates_by_input"].items())
    held = Counter(j.remote_id for j in rows if j.remote_id)
    return {
        "extra_creates": extra,
        "shared": sum(1 for n in held.values() if n > 1),
        "orphans": sum(1 for g in stats["generations"] if g["id"] not in held),
        "creates": stats["creates"],
    }


def variants(out: Path, config: ProviderConfig, n: int) -> Campaign:
    """`n` unseeded variants of one prompt: one input, `n` jobs."""
    base = campaign(n=1, out=out, provider=config)
    specs = [
        JobSpec(
            key=f"v{v}",
            index=v + 1,
            model="black-forest-labs/flux-schnell",
            input={"prompt": "one fox"},
            meta={"prompt": "one fox", "slug": "one-fox", "variant": v},
        )
        for v in range(n)
    ]
    return Campaign(settings=base.settings, jobs=specs)


@pytest.mark.sim_config({"clock_offset": -300.0, "faults": {"create": LOST_ONCE}})
def test_lost_creates_are_found_on_a_provider_clock_five_minutes_behind(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(campaign(n=6, out=tmp_path, provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 6}
    assert money(sim, store) == {"extra_creates": 0, "shared": 0, "orphans": 0, "creates": 6}
    assert sim.sim.stats()["dropped_creates"] == 6  # every create lost its answer


@pytest.mark.sim_config({"clock_offset": 120.0})
def test_on_a_provider_clock_ahead_an_earlier_identical_prediction_stays_out_of_the_window(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same prompt ran five minutes ago on this account (another tool). The provider's
    # clock is seven minutes ahead: a window read on our clock would reach back to it, and
    # two free predictions for one job cannot be told apart.
    import httpx

    earlier = httpx.post(
        f"{sim.url}/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "prompt 0"}},
        headers={"Authorization": "Bearer k"},
        timeout=10,
    ).json()["id"]
    # stepped: that one was made 5 minutes ago; from now on each first answer is lost
    sim.sim.update_config({"clock_offset": 420.0, "faults": {"create": LOST_ONCE}})
    store.enqueue(campaign(n=1, out=tmp_path, provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 1}
    (job,) = store.jobs("c1")
    assert job.remote_id != earlier
    assert sim.sim.stats()["creates"] == 2  # the earlier one and its own: not paid again


@pytest.mark.sim_config(
    {"faults": {"create": {"drop_after_create_rate": 1.0, "times": 2, "match": "one fox"}}}
)
def test_unseeded_variants_each_keep_their_own_prediction_after_lost_answers(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four identical inputs; the answers of two of them are lost after they were made.
    store.enqueue(variants(tmp_path, provider(sim, "replicate"), 4))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 4}
    assert money(sim, store) == {"extra_creates": 0, "shared": 0, "orphans": 0, "creates": 4}
    assert sim.sim.stats()["dropped_creates"] == 2
    files = {json.dumps(j.files[0]["sha256"]) for j in store.jobs("c1")}
    assert len(files) == 4  # four images, not one image four times


@pytest.mark.sim_config(
    {"replicate_data_retention": 0.2, "faults": {"create": {"drop_after_create_rate": 1.0}}}
)
def test_a_lost_create_whose_data_the_provider_removed_is_uncertain_not_resent(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replicate empties a prediction's input once its data is removed: it can no longer be
    # recognised, so "no match" says nothing.
    store.enqueue(campaign(n=2, out=tmp_path, provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 2}
    assert money(sim, store)["extra_creates"] == 0 and sim.sim.stats()["creates"] == 2
    assert all("removed the input" in (j.error or "") for j in store.jobs("c1"))


def deerapi(sim: SimHandle, **changes: Any) -> ProviderConfig:
    config = ProviderConfig(
        "deerapi-replicate", "replicate", f"{sim.url}/replicate", "bearer", "RUNNER_TEST_KEY"
    )
    return ProviderConfig(**{**config.to_dict(), **changes})


@pytest.mark.sim_config(
    {
        "aggregator_routes": ["list"],
        "aggregator_list": "empty",
        "faults": {"create": {"drop_after_create_rate": 1.0}},
    }
)
def test_an_aggregators_undocumented_list_is_not_relied_on(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route answers 200 with nothing in it: taken at its word, every lost create would be
    # paid twice. DeerAPI does not document it, so the preset never asks.
    store.enqueue(campaign(n=3, out=tmp_path, provider=deerapi(sim)))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 3}
    stats = sim.sim.stats()
    assert stats["creates"] == 3 and stats["lists"] == 0
    assert money(sim, store)["extra_creates"] == 0


@pytest.mark.sim_config({"faults": {"create": {"drop_after_create_rate": 1.0}}})
def test_a_list_route_that_answers_404_is_recorded_and_not_asked_again(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job file says the aggregator lists; it does not (the simulator's default).
    config = deerapi(sim, name="custom", routes=("list",))
    store.enqueue(campaign(n=2, out=tmp_path, provider=config))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"uncertain": 2}
    # the first to ask says why; a job asking after that knows the route is not there
    assert any("list route" in (j.error or "") for j in store.jobs("c1"))
    key = ":".join(config.account)
    assert store.account_facts(key)["unsupported"] == ["list"]
    # The next run of another campaign on that account does not ask the route again.
    store.enqueue(campaign(name="c2", n=1, out=tmp_path, provider=config, start=10))
    asked = sim.sim.stats()["status_codes"].get("404", 0)
    run(store, "c2", monkeypatch)
    assert states_of(store, "c2") == {"uncertain": 1}
    assert sim.sim.stats()["status_codes"].get("404", 0) == asked
    assert sim.sim.stats()["creates"] == 3  # nothing resent, in either run


@pytest.mark.sim_config({"duration_median": 30.0, "duration_sigma": 0.0})
def test_an_aggregator_preset_does_not_call_the_cancel_it_does_not_document(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.campaign import CampaignSettings

    base = campaign(n=2, out=tmp_path, provider=deerapi(sim))
    settings = CampaignSettings(**{**base.settings.__dict__, "deadline_seconds": 0.5})
    store.enqueue(Campaign(settings=settings, jobs=base.jobs))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"expired": 2}
    assert sim.sim.stats()["cancels"] == 0
    assert sim.sim.stats()["status_codes"].get("404", 0) == 0


@pytest.mark.sim_config({"bfl_not_found_after_create": 1.0})
def test_bfl_task_not_found_right_after_a_create_is_asked_again_not_lost(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # For a second after each create BFL does not know the task yet (HTTP 200, "Task not
    # found"); three such answers used to fail a job that was paid for.
    store.enqueue(campaign(n=4, out=tmp_path, provider=provider(sim, "bfl")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 4}
    stats = sim.sim.stats()
    assert all(g["files_served"] == 1 for g in stats["generations"])
    assert stats["creates"] == 4
