"""One test per error class, through the worker against the simulator over real sockets.

400/422 terminal with the provider's own words; 401/403 stop the campaign; 402 pauses it; 404 on
create terminal, on a query retried then `lost`; 429 waits and slows creates; 5xx and timeouts
on queries retried; outputs that vanish are refreshed (Replicate) or expire (BFL).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from runner import app, states
from runner.campaign import Limits, ProviderConfig
from runner.providers.base import ErrorKind, ProviderError
from runner.providers.factory import make_provider
from runner.retry import time_scale
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.server import SimHandle
from runner.states import State
from runner.store import Store
from tests.factories import campaign
from tests.integration.test_worker import provider, run, sim, states_of, store

__all__ = ["sim", "store"]  # fixtures shared with test_worker


def errors_of(store: Store) -> list[str]:
    return [j.error or "" for j in store.jobs("c1")]


@pytest.mark.parametrize("style", ["bfl", "replicate"])
@pytest.mark.parametrize("status", [400, 422])
def test_refused_input_fails_with_the_providers_message(
    sim: SimHandle,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    style: str,
    status: int,
) -> None:
    sim.sim.update_config({"faults": {"create": {"error_rate": 1.0, "error_status": status}}})
    store.enqueue(campaign(n=2, out=tmp_path, provider=provider(sim, style)))
    report = run(store, "c1", monkeypatch)
    assert states_of(store) == {"failed": 2}
    assert app.exit_code(store, ["c1"], report) == app.EXIT_JOBS_FAILED
    assert all(f"HTTP {status}" in e and "rejected by provider" in e for e in errors_of(store))


def test_bfl_validation_error_names_the_field(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.enqueue(
        campaign(n=1, out=tmp_path, provider=provider(sim, "bfl"), input_extra={"width": 1000})
    )
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"failed": 1}
    (error,) = errors_of(store)
    assert "HTTP 422" in error and "width" in error


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_stop_the_campaign(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    sim.sim.update_config({"faults": {"create": {"error_rate": 1.0, "error_status": status}}})
    store.enqueue(campaign(n=4, out=tmp_path, provider=provider(sim, "replicate")))
    report = run(store, "c1", monkeypatch)
    assert "API key" in report.halted["c1"]
    assert states_of(store) == {"queued": 4}  # nothing lost, nothing counted as an attempt
    assert app.exit_code(store, ["c1"], report) == app.EXIT_STOPPED
    assert store.halted("c1")


def test_out_of_credit_pauses_and_resumes_after_topping_up(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(duration_median=0.1, credits=8.0, bfl_cost=4.0)
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign(n=5, out=tmp_path, provider=provider(sim, "bfl")))
        report = run(store, "c1", monkeypatch)
        assert "out of credit" in report.halted["c1"]
        assert states_of(store) == {"done": 2, "queued": 3}
        sim.sim.update_config({"credits": 100.0})
        run(store, "c1", monkeypatch)
        assert states_of(store) == {"done": 5}
        assert sim.sim.stats()["creates"] == 5


def test_unknown_model_is_terminal_on_create(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = campaign(
        n=2, out=tmp_path, provider=provider(sim, "replicate"), model="acme/does-not-exist"
    )
    store.enqueue(spec)
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"failed": 2}
    assert all("HTTP 404" in e for e in errors_of(store))


def test_not_found_on_query_is_retried_then_lost(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config({"faults": {"get": {"error_rate": 1.0, "error_status": 404}}})
    store.enqueue(campaign(n=2, out=tmp_path, provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"failed": 2}
    assert all(e.startswith("lost:") for e in errors_of(store))
    assert sim.sim.stats()["status_codes"]["404"] >= 2 * 3  # asked again before giving up
    # Not within the first minute (scaled) of its create: a task may not be known yet.
    grace = states.NOT_FOUND_GRACE * time_scale()
    for job in store.jobs("c1"):
        assert job.finished_at is not None and job.submitted_at is not None
        assert job.finished_at - job.submitted_at >= grace


def test_rate_limited_creates_wait_and_nothing_is_created_twice(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config({"faults": {"create": {"error_rate": 0.5, "error_status": 429}}})
    store.enqueue(campaign(n=12, out=tmp_path, provider=provider(sim, "replicate")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 12}
    stats = sim.sim.stats()
    assert stats["rate_limited"] > 0
    assert stats["creates"] == 12 and set(stats["creates_by_input"].values()) == {1}
    assert all(j.attempts == 1 for j in store.jobs("c1"))  # a 429 is not an attempt


def test_in_flight_limit_429_from_bfl_is_absorbed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The account allows 3 tasks at once but the campaign believes 10: the 429s slow it down.
    config = SimConfig(duration_median=0.2, duration_sigma=0.1, bfl_max_in_flight=3)
    with running_in_thread(config=config) as sim:
        from runner.campaign import Limits

        spec = campaign(n=12, out=tmp_path, provider=provider(sim, "bfl"), limits=Limits(10))
        store.enqueue(spec)
        run(store, "c1", monkeypatch)
        stats = sim.sim.stats()
    assert states_of(store) == {"done": 12}
    assert stats["rate_limited"] > 0 and stats["creates"] == 12


def test_query_timeouts_are_classified_as_retryable() -> None:
    config = SimConfig(duration_median=0.1, faults={})
    with running_in_thread(config=config) as sim:
        sim.sim.update_config({"faults": {"get": {"slow_rate": 1.0, "slow_seconds": 2.0}}})
        cfg = ProviderConfig("replicate", "replicate", sim.url, "bearer", "K")
        provider_ = make_provider(cfg, "k", timeout=0.3)

        async def main() -> ProviderError:
            try:
                submission = await provider_.create(
                    "black-forest-labs/flux-schnell", {"prompt": "x"}, deadline_seconds=None
                )
                with pytest.raises(ProviderError) as caught:
                    await provider_.poll(submission.handle)
                return caught.value
            finally:
                await provider_.aclose()

        error = anyio.run(main)
    assert error.kind is ErrorKind.TIMEOUT and error.maybe_sent


def test_replicate_outputs_removed_before_download_expire(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(duration_median=0.1, replicate_output_ttl=0.0)
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign(n=2, out=tmp_path, provider=provider(sim, "replicate")))
        run(store, "c1", monkeypatch)
    assert states_of(store) == {"expired": 2}
    assert all("removed" in e or "no longer" in e for e in errors_of(store))


def test_bfl_sample_that_expired_is_not_resubmitted(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(duration_median=0.1, bfl_url_ttl=0.0)
    with running_in_thread(config=config) as sim:
        # Signed expiries are whole seconds: make sure the download comes after.
        sim.sim.update_config({"faults": {"download": {"slow_rate": 1.0, "slow_seconds": 1.1}}})
        store.enqueue(campaign(n=2, out=tmp_path, provider=provider(sim, "bfl")))
        run(store, "c1", monkeypatch)
        creates = sim.sim.stats()["creates"]
    assert states_of(store) == {"expired": 2}
    assert creates == 2  # paying again is the user's decision


def test_server_errors_on_every_query_route_are_retried(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.sim.update_config(
        {
            "faults": {
                # `times` caps the failures per prompt: every job gets through in the end
                "get": {"error_rate": 0.3, "error_status": 500, "times": 3},
                "download": {"error_rate": 0.5, "error_status": 503, "times": 3},
            }
        }
    )
    store.enqueue(campaign(n=20, out=tmp_path, provider=provider(sim, "bfl")))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"done": 20}
    codes = sim.sim.stats()["status_codes"]
    assert codes.get("500", 0) > 0 and codes.get("503", 0) > 0
    assert all(j.state is State.DONE for j in store.jobs("c1"))


def test_the_job_files_max_attempts_bounds_the_creates(
    sim: SimHandle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every create answered 500 before the server acted: each is looked up (none was made),
    sent again, and given up after the campaign's own `max_attempts`, not the default 5."""
    sim.sim.update_config({"faults": {"create": {"error_rate": 1.0, "error_status": 500}}})
    limits = Limits(max_attempts=2)
    store.enqueue(campaign(n=2, out=tmp_path, provider=provider(sim, "replicate"), limits=limits))
    run(store, "c1", monkeypatch)
    assert states_of(store) == {"failed": 2}
    assert all("gave up after 2 attempts" in e for e in errors_of(store)), errors_of(store)
    stats = sim.sim.stats()
    assert stats["creates"] == 0
    assert stats["status_codes"].get("500") == 4  # 2 jobs x 2 attempts
