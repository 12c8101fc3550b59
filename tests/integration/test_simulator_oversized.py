"""The simulator's oversized answers (`SimConfig.oversized`) over real sockets: each field made
as long as asked, only for the prompts that match, the prediction itself unchanged; and the
switch's own checks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from runner.simulator import SimConfig, running_in_thread
from runner.simulator.config import Oversize

BEARER = {"Authorization": "Bearer key-1"}
XKEY = {"x-key": "key-1"}
MODEL_URL = "/v1/models/black-forest-labs/flux-schnell/predictions"
T = TypeVar("T")


def fast(**overrides: Any) -> SimConfig:
    return SimConfig(**{"duration_median": 0.05, "duration_sigma": 0.0, **overrides})


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"gave up waiting; last value: {value!r}"
        time.sleep(0.01)


def test_replicate_answers_carry_an_id_as_long_as_asked_and_the_prediction_keeps_its_own() -> None:
    config = fast(oversized={"id": 1_000_000, "match": "big"})
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        big = client.post(MODEL_URL, json={"input": {"prompt": "a big one"}}, headers=BEARER)
        small = client.post(MODEL_URL, json={"input": {"prompt": "a small one"}}, headers=BEARER)
        assert big.status_code == small.status_code == 201
        shown = big.json()["id"]
        assert len(shown) == 1_000_000 and len(small.json()["id"]) == 26  # only what matches
        real = shown[:26]
        # the prediction is there, under its own id, and every answer about it shows the long one
        got = client.get(f"/v1/predictions/{real}", headers=BEARER)
        assert got.status_code == 200 and got.json()["id"] == shown
        listed = client.get("/v1/predictions", headers=BEARER).json()["results"]
        assert sorted(len(p["id"]) for p in listed) == [26, 1_000_000]
        assert client.get("/_sim/stats").json()["creates"] == 2


def test_replicate_outputs_and_errors_as_long_and_as_many_as_asked() -> None:
    config = fast(oversized={"output_url": 10_000, "outputs": 40, "error": 50_000})
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        created = client.post(MODEL_URL, json={"input": {"prompt": "p"}}, headers=BEARER).json()
        done = wait_for(
            lambda: client.get(created["urls"]["get"], headers=BEARER).json(),
            lambda p: p["status"] == "succeeded",
        )
        assert len(done["output"]) == 40
        assert all(len(url) == 10_000 for url in done["output"])
        # the padding is a query parameter the file host ignores: the file is still served
        assert client.get(done["output"][0]).status_code == 200
        client.post("/_sim/config", json={"faults": {"create": {"fail_rate": 1.0}}})
        failing = client.post(MODEL_URL, json={"input": {"prompt": "q"}}, headers=BEARER).json()
        failed = wait_for(
            lambda: client.get(failing["urls"]["get"], headers=BEARER).json(),
            lambda p: p["status"] == "failed",
        )
        assert len(failed["error"]) == 50_000 and failed["error"].startswith("Prediction failed")


def test_bfl_ids_polling_urls_samples_and_details_as_long_as_asked() -> None:
    config = fast(oversized={"id": 300, "polling_url": 20_000, "output_url": 9_000})
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        answer = client.post("/v1/flux-pro-1.1", json={"prompt": "p"}, headers=XKEY).json()
        assert len(answer["id"]) == 300 and len(answer["polling_url"]) == 20_000
        # the long polling URL still works, as the ids in it are the task's own
        result = wait_for(
            lambda: client.get(answer["polling_url"], headers=XKEY).json(),
            lambda r: r["status"] == "Ready",
        )
        assert len(result["id"]) == 300
        assert len(result["result"]["sample"]) == 9_000
        assert client.get(result["result"]["sample"]).status_code == 200
        client.post(
            "/_sim/config",
            json={"faults": {"create": {"fail_rate": 1.0}}, "oversized": {"error": 70_000}},
        )
        failing = client.post("/v1/flux-pro-1.1", json={"prompt": "q"}, headers=XKEY).json()
        failed = wait_for(
            lambda: client.get(failing["polling_url"], headers=XKEY).json(),
            lambda r: r["status"] == "Error",
        )
        assert len(failed["details"]["error"]) == 70_000


def test_without_the_switch_answers_are_their_usual_size() -> None:
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        answer = client.post("/v1/flux-pro-1.1", json={"prompt": "p"}, headers=XKEY).json()
        assert len(answer["id"]) == 36 and len(answer["polling_url"]) < 200


def test_the_switch_is_checked_and_round_trips_through_json() -> None:
    config = SimConfig(oversized={"id": 5, "outputs": 3, "match": "x"})
    assert config.oversized == Oversize(id=5, outputs=3, match="x")
    assert SimConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.merged({"oversized": {"error": 9}}).oversized == Oversize(error=9)
    with pytest.raises(ValueError, match="unknown field"):
        SimConfig.from_dict({"oversized": {"name": 3}})
    with pytest.raises(ValueError, match="must not be negative"):
        SimConfig.from_dict({"oversized": {"id": -1}})
    with pytest.raises(ValueError, match="integer"):
        SimConfig.from_dict({"oversized": {"id": "big"}})
    with pytest.raises(ValueError, match="match"):
        SimConfig.from_dict({"oversized": {"match": ""}})
    with pytest.raises(ValueError, match="object"):
        SimConfig.from_dict({"oversized": [1]})
