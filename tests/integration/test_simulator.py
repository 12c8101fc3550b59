"""The provider simulator over real sockets: each API's happy path, its traps (upstream URLs,
expiring files, forgotten tasks), its error shapes, limits and injected faults, and the counters
other tests rely on to prove what the runner did.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
import pytest
from PIL import Image

from runner.simulator import FaultSpec, SimConfig, Simulator, running_in_thread
from runner.simulator.server import SimHandle

# The providers' OpenAPI specs live in shared/ beside the project root (as on every developer
# and CI machine here); a user's checkout may not have them.
SPECS = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[3] / "shared" / "specs",
            Path("/work/shared/specs"),
        )
        if p.is_dir()
    ),
    Path("/work/shared/specs"),
)
BEARER = {"Authorization": "Bearer key-1"}
XKEY = {"x-key": "key-1"}
HEX = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
T = TypeVar("T")


class FakeClock:
    """A clock the test moves by hand, to reach lifetimes measured in minutes at once."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast(**overrides: Any) -> SimConfig:
    """Generations of exactly 0.05 s unless a test says otherwise."""
    values: dict[str, Any] = {"duration_median": 0.05, "duration_sigma": 0.0}
    values.update(overrides)
    return SimConfig(**values)


@pytest.fixture
def sim() -> Iterator[tuple[SimHandle, httpx.Client]]:
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        yield handle, client


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"gave up waiting; last value: {value!r}"
        time.sleep(0.01)


def poll_replicate(client: httpx.Client, url: str, headers: dict[str, str]) -> dict[str, Any]:
    return wait_for(
        lambda: client.get(url, headers=headers).json(),
        lambda p: p["status"] in ("succeeded", "failed", "canceled", "aborted"),
    )


def poll_bfl(client: httpx.Client, url: str, headers: dict[str, str]) -> dict[str, Any]:
    return wait_for(
        lambda: client.get(url, headers=headers).json(), lambda r: r["status"] != "Pending"
    )


def stats(client: httpx.Client) -> dict[str, Any]:
    return client.get("/_sim/stats").json()


# -- Replicate style ------------------------------------------------------------------------


def test_replicate_models_path_poll_and_download(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    created = client.post(
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "a paper boat", "aspect_ratio": "16:9"}},
        headers=BEARER,
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "starting"
    assert body["version"] == "hidden"
    assert body["model"] == "black-forest-labs/flux-schnell"
    assert len(body["id"]) == 26 and body["id"].isalnum() and body["id"].islower()
    assert body["output"] is None and "started_at" not in body
    assert body["urls"]["get"] == f"{handle.url}/v1/predictions/{body['id']}"

    done = poll_replicate(client, body["urls"]["get"], BEARER)
    assert done["status"] == "succeeded"
    assert done["metrics"]["predict_time"] == pytest.approx(0.05, abs=0.01)
    assert done["completed_at"].endswith("Z") and done["started_at"] <= done["completed_at"]
    assert isinstance(done["output"], list) and len(done["output"]) == 1

    # downloaded without any key, as a file host must be
    image = client.get(done["output"][0])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/webp"
    assert int(image.headers["content-length"]) == len(image.content)
    picture = Image.open(io.BytesIO(image.content))
    assert picture.format == "WEBP"
    assert picture.size == (256, 144)

    counters = stats(client)
    assert counters["downloads"] == 1 and counters["downloads_with_auth"] == 0
    path = f"/files/{body['id']}/0.webp"
    assert counters["files"][path] == hashlib.sha256(image.content).hexdigest()
    assert counters["creates_by_route"] == {"/v1/models/{owner}/{name}/predictions": 1}
    assert counters["polls"] >= 1


def test_replicate_version_path_forms(sim: tuple[SimHandle, httpx.Client]) -> None:
    _, client = sim
    pinned = client.post(
        "/v1/predictions",
        json={
            "version": f"stability-ai/sdxl:{HEX}",
            "input": {"prompt": "x", "num_outputs": 3, "output_format": "png"},
        },
        headers=BEARER,
    ).json()
    assert (pinned["model"], pinned["version"]) == ("stability-ai/sdxl", HEX)
    bare = client.post("/v1/predictions", json={"version": HEX, "input": {}}, headers=BEARER)
    assert bare.status_code == 201 and bare.json()["model"] == "unknown/unknown"
    official = client.post(
        "/v1/predictions",
        json={"version": "black-forest-labs/flux-1.1-pro", "input": {"prompt": "y"}},
        headers=BEARER,
    ).json()
    assert official["version"] == "hidden"

    pinned_done = poll_replicate(client, pinned["urls"]["get"], BEARER)
    assert len(pinned_done["output"]) == 3 and pinned_done["output"][2].split("?")[0].endswith(
        "/2.png"
    )
    # the real FLUX pro models answer one URL string, not a list
    official_done = poll_replicate(client, official["urls"]["get"], BEARER)
    assert isinstance(official_done["output"], str)
    picture = Image.open(io.BytesIO(client.get(pinned_done["output"][1]).content))
    assert picture.format == "PNG" and picture.size == (256, 256)


def test_prefer_wait_answers_201_when_done_and_202_when_not() -> None:
    config = fast()
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        started = time.monotonic()
        quick = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "quick"}},
            headers={**BEARER, "Prefer": "wait=5"},
        )
        assert quick.status_code == 201
        assert quick.json()["status"] == "succeeded" and quick.json()["output"]
        assert time.monotonic() - started < 2

        handle.sim.update_config({"duration_median": 30.0})
        started = time.monotonic()
        slow = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "slow"}},
            headers={**BEARER, "Prefer": "wait=1"},
        )
        waited = time.monotonic() - started
        assert slow.status_code == 202
        assert slow.json()["status"] == "processing" and slow.json()["output"] is None
        assert 0.9 <= waited < 5

        bad = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {}},
            headers={**BEARER, "Prefer": "wait=61"},
        )
        assert bad.status_code == 422
        assert stats(client)["creates"] == 2


def test_cancel_after_aborts_before_start_and_cancels_while_running() -> None:
    clock = FakeClock()
    simulator = Simulator(fast(queue_delay=10.0, credits=100.0), clock=clock)
    with running_in_thread(sim=simulator) as handle, httpx.Client(base_url=handle.url) as client:
        url = "/v1/models/black-forest-labs/flux-schnell/predictions"
        aborted = client.post(
            url, json={"input": {"prompt": "a"}}, headers={**BEARER, "Cancel-After": "5s"}
        ).json()
        assert "deadline" in aborted
        running = client.post(
            url, json={"input": {"prompt": "b"}}, headers={**BEARER, "Cancel-After": "1m"}
        ).json()
        simulator.update_config({"duration_median": 100.0})
        late = client.post(
            url, json={"input": {"prompt": "c"}}, headers={**BEARER, "Cancel-After": "0h0m15s"}
        ).json()
        for header in ("3s", "soon", "5x"):
            refused = client.post(
                url, json={"input": {}}, headers={**BEARER, "Cancel-After": header}
            )
            assert refused.status_code == 422, header
            assert refused.json()["invalid_fields"][0]["field"] == "Cancel-After"

        clock.advance(6)
        first = client.get(f"/v1/predictions/{aborted['id']}", headers=BEARER).json()
        assert first["status"] == "aborted"
        assert "started_at" not in first and first["completed_at"]
        clock.advance(10)  # t=16: "c" started at 10 and its deadline (15) passed while running
        third = client.get(f"/v1/predictions/{late['id']}", headers=BEARER).json()
        assert third["status"] == "canceled" and third["started_at"] and third["output"] is None
        second = client.get(f"/v1/predictions/{running['id']}", headers=BEARER).json()
        assert second["status"] == "succeeded"
        # the aborted prediction never ran, so it was not billed
        assert stats(client)["credits_spent"]["key-1"] == pytest.approx(8.0)


def test_cancel_stops_a_running_prediction(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    # cancel is not documented at the aggregators: this one serves it anyway
    handle.sim.update_config({"duration_median": 30.0, "aggregator_routes": ["cancel"]})
    body = client.post(
        "/replicate/v1/models/black-forest-labs/flux-dev/predictions",
        json={"input": {"prompt": "cancel me"}},
        headers=BEARER,
    ).json()
    canceled = client.post(f"/replicate/v1/predictions/{body['id']}/cancel", headers=BEARER)
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["output"] is None and "metrics" in canceled.json()
    again = client.get(f"/replicate/v1/predictions/{body['id']}", headers=BEARER).json()
    assert again["status"] == "canceled"
    missing = client.post("/v1/predictions/doesnotexist/cancel", headers=BEARER)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert stats(client)["cancels"] == 1


def test_list_is_newest_first_with_cursor_links(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    handle.sim.update_config({"list_page_size": 3})
    ids = []
    for n in range(7):
        created = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": f"p{n}"}},
            headers=BEARER,
        ).json()
        ids.append(created["id"])
    # another account's predictions never show up in this one's list
    client.post(
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "other"}},
        headers={"Authorization": "Bearer key-2"},
    )

    first = client.get("/v1/predictions", headers=BEARER).json()
    assert [p["id"] for p in first["results"]] == ids[::-1][:3]
    assert first["previous"] is None and first["next"].startswith(handle.url)
    second = client.get(first["next"], headers=BEARER).json()
    assert [p["id"] for p in second["results"]] == ids[::-1][3:6]
    third = client.get(second["next"], headers=BEARER).json()
    assert [p["id"] for p in third["results"]] == [ids[0]] and third["next"] is None
    back = client.get(second["previous"], headers=BEARER).json()
    assert [p["id"] for p in back["results"]] == ids[::-1][:3]

    since = client.get(f"/v1/predictions/{ids[4]}", headers=BEARER).json()["created_at"]
    filtered = client.get("/v1/predictions", params={"created_after": since}, headers=BEARER).json()
    assert [p["id"] for p in filtered["results"]] == ids[::-1][:3]
    bad = client.get("/v1/predictions", params={"created_after": "yesterday"}, headers=BEARER)
    assert bad.status_code == 422
    assert stats(client)["lists"] == 6


def test_aggregator_answers_point_upstream(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    created = client.post(
        "/replicate/v1/predictions",
        json={"version": "black-forest-labs/flux-1.1-pro", "input": {"prompt": "tea cup"}},
        headers=BEARER,
    )
    assert created.status_code == 201
    body = created.json()
    upstream = f"https://api.replicate.com/v1/predictions/{body['id']}"
    assert body["urls"]["get"] == upstream and body["urls"]["cancel"] == f"{upstream}/cancel"
    # the prediction lives on the aggregator only: Replicate itself does not know it
    assert client.get(f"/v1/predictions/{body['id']}", headers=BEARER).status_code == 404
    done = poll_replicate(client, f"/replicate/v1/predictions/{body['id']}", BEARER)
    assert done["status"] == "succeeded" and done["output"].startswith(handle.url)

    task = client.post("/flux/v1/flux-pro-1.1", json={"prompt": "lantern"}, headers=BEARER)
    assert task.status_code == 200
    answer = task.json()
    assert answer["polling_url"] == f"https://api.eu2.bfl.ai/v1/get_result?id={answer['id']}"
    assert answer["cost"] is None and answer["output_mp"] is None
    result = poll_bfl(client, f"/flux/v1/get_result?id={answer['id']}", BEARER)
    assert result["status"] == "Ready"
    assert client.get(result["result"]["sample"]).status_code == 200
    assert stats(client)["creates_by_route"] == {
        "/replicate/v1/predictions": 1,
        "/flux/v1/{model}": 1,
    }


def test_replicate_output_is_removed_after_its_ttl() -> None:
    clock = FakeClock()
    simulator = Simulator(fast(), clock=clock)
    with running_in_thread(sim=simulator) as handle, httpx.Client(base_url=handle.url) as client:
        body = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "short lived"}},
            headers=BEARER,
        ).json()
        clock.advance(1)
        done = client.get(body["urls"]["get"], headers=BEARER).json()
        file_url = done["output"][0]
        assert done["data_removed"] is False and client.get(file_url).status_code == 200
        clock.advance(3600)
        removed = client.get(body["urls"]["get"], headers=BEARER).json()
        assert removed["status"] == "succeeded"
        assert removed["output"] is None and removed["data_removed"] is True
        assert client.get(file_url).status_code == 404


# -- BFL style ------------------------------------------------------------------------------


def test_bfl_create_poll_verbatim_and_download() -> None:
    clock = FakeClock()
    simulator = Simulator(fast(duration_median=2.0), clock=clock)
    with running_in_thread(sim=simulator) as handle, httpx.Client(base_url=handle.url) as client:
        _check_bfl_flow(handle, client, clock)


def _check_bfl_flow(handle: SimHandle, client: httpx.Client, clock: FakeClock) -> None:
    created = client.post(
        "/v1/flux-pro-1.1",
        json={"prompt": "a red lantern", "width": 512, "height": 256, "seed": 7},
        headers=XKEY,
    )
    assert created.status_code == 200
    answer = created.json()
    assert str(uuid.UUID(answer["id"])) == answer["id"]
    assert answer["polling_url"] == f"{handle.url}/eu2/v1/get_result?id={answer['id']}"
    assert answer["cost"] == 4.0 and answer["output_mp"] == 0.13

    pending = client.get(answer["polling_url"], headers=XKEY).json()
    assert (pending["status"], pending["progress"], pending["result"]) == ("Pending", 0.0, None)
    clock.advance(1.0)
    halfway = client.get(answer["polling_url"], headers=XKEY).json()
    assert halfway["status"] == "Pending" and halfway["progress"] == pytest.approx(0.5)
    clock.advance(1.5)
    result = client.get(answer["polling_url"], headers=XKEY).json()
    assert result["status"] == "Ready" and result["progress"] is None
    assert result["result"]["seed"] == 7 and result["result"]["prompt"] == "a red lantern"
    assert result["result"]["duration"] == pytest.approx(2.0)
    assert result["result"]["end_time"] - result["result"]["start_time"] == pytest.approx(2.0)
    counters = stats(client)
    assert counters["polls_via_polling_url"] == counters["polls"] == 3

    # the documented fallback answers too, and is counted as not using polling_url
    fallback = client.get("/v1/get_result", params={"id": answer["id"]}, headers=XKEY)
    assert fallback.json()["status"] == "Ready"
    after = stats(client)
    assert after["polls"] == counters["polls"] + 1
    assert after["polls_via_polling_url"] == counters["polls_via_polling_url"]

    sample = client.get(result["result"]["sample"])
    assert sample.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(sample.content))
    assert picture.format == "JPEG" and picture.size == (256, 128)
    # same prediction, same bytes
    assert client.get(result["result"]["sample"]).content == sample.content

    unknown = client.get("/v1/get_result", params={"id": str(uuid.uuid4())}, headers=XKEY)
    assert unknown.status_code == 200 and unknown.json()["status"] == "Task not found"
    tampered = result["result"]["sample"].replace("sig=", "sig=0")
    assert client.get(tampered).status_code == 403


def test_bfl_sample_expires_then_task_is_forgotten() -> None:
    clock = FakeClock()
    simulator = Simulator(fast(), clock=clock)
    with running_in_thread(sim=simulator) as handle, httpx.Client(base_url=handle.url) as client:
        answer = client.post("/v1/flux-dev", json={"prompt": "brief"}, headers=XKEY).json()
        clock.advance(1)
        ready = client.get(answer["polling_url"], headers=XKEY).json()
        sample = ready["result"]["sample"]
        assert client.get(sample).status_code == 200
        clock.advance(601)
        assert client.get(answer["polling_url"], headers=XKEY).json()["status"] == "Ready"
        expired = client.get(sample)
        assert expired.status_code == 403
        clock.advance(1200)
        forgotten = client.get(answer["polling_url"], headers=XKEY)
        assert forgotten.status_code == 200
        assert forgotten.json() == {"id": answer["id"], "status": "Task not found"}


def test_bfl_in_flight_limit_answers_429(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    handle.sim.update_config(
        {
            "duration_median": 30.0,
            "bfl_max_in_flight": 2,
            "bfl_model_max_in_flight": {"flux-kontext-max": 1},
        }
    )
    for _ in range(2):
        assert client.post("/v1/flux-pro-1.1", json={"prompt": "x"}, headers=XKEY).is_success
    over = client.post("/v1/flux-pro-1.1", json={"prompt": "x"}, headers=XKEY)
    assert over.status_code == 429
    assert over.json()["detail"].startswith(
        "You have exceeded the number of allowed concurrent tasks"
    )
    assert "retry-after" not in over.headers

    other = {"x-key": "key-2"}
    kontext = {"prompt": "edit"}
    assert client.post("/v1/flux-kontext-max", json=kontext, headers=other).is_success
    assert client.post("/v1/flux-kontext-max", json=kontext, headers=other).status_code == 429
    assert client.post("/v1/flux-kontext-pro", json=kontext, headers=other).is_success

    counters = stats(client)
    assert counters["max_in_flight_seen"] == {"key-1": 2, "key-2": 2}
    assert counters["rate_limited"] == 2 and counters["creates"] == 4


def test_out_of_credits_answers_402(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    handle.sim.update_config({"credits": 10.0, "bfl_cost": 4.0, "replicate_cost": 4.0})
    assert client.post("/v1/flux-dev", json={"prompt": "1"}, headers=XKEY).is_success
    assert client.post("/v1/flux-dev", json={"prompt": "2"}, headers=XKEY).is_success
    broke = client.post("/v1/flux-dev", json={"prompt": "3"}, headers=XKEY)
    assert broke.status_code == 402 and isinstance(broke.json()["detail"], str)
    assert client.get("/v1/credits", headers=XKEY).json() == {"credits": 2.0}

    replicate = client.post(
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"prompt": "x", "num_outputs": 3}},
        headers=BEARER,
    )
    assert replicate.status_code == 402
    assert replicate.json()["title"] == "Insufficient credit"
    assert stats(client)["creates"] == 2


# -- auth and validation --------------------------------------------------------------------


def test_wrong_auth_scheme_is_refused() -> None:
    config = fast(api_keys=["key-1"])
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        replicate_body = {"input": {"prompt": "x"}}
        model_path = "/v1/models/black-forest-labs/flux-schnell/predictions"
        for path in (model_path, f"/replicate{model_path}"):
            for headers in (XKEY, {"Authorization": "Bearer key-9"}, {"Authorization": "key-1"}):
                refused = client.post(path, json=replicate_body, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json() == {
                    "title": "Unauthenticated",
                    "detail": "You did not pass a valid authentication token",
                    "status": 401,
                }
        assert client.post("/v1/flux-pro-1.1", json={"prompt": "x"}, headers=BEARER).status_code
        for path, headers in (
            ("/v1/flux-pro-1.1", BEARER),
            ("/v1/flux-pro-1.1", {"x-key": "key-9"}),
            ("/flux/v1/flux-pro-1.1", XKEY),
        ):
            refused = client.post(path, json={"prompt": "x"}, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert isinstance(refused.json()["detail"], str)
        assert client.get("/v1/get_result?id=x", headers=BEARER).status_code == 401
        assert client.get("/v1/predictions/x", headers=XKEY).status_code == 401
        assert stats(client)["creates"] == 0
        # the right scheme on each surface works
        assert client.post(model_path, json=replicate_body, headers=BEARER).status_code == 201
        assert client.post("/v1/flux-pro-1.1", json={"prompt": "x"}, headers=XKEY).is_success
        assert client.post("/flux/v1/flux-dev", json={"prompt": "x"}, headers=BEARER).is_success


def test_validation_errors_have_each_providers_shape(
    sim: tuple[SimHandle, httpx.Client],
) -> None:
    _, client = sim
    with_model = client.post(
        "/replicate/v1/predictions",
        json={"model": "black-forest-labs/flux-schnell", "input": {}},
        headers=BEARER,
    )
    assert with_model.status_code == 422
    assert with_model.headers["content-type"] == "application/problem+json"
    problem = with_model.json()
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    fields = {(f["type"], f["description"]) for f in problem["invalid_fields"]}
    assert ("required", "version is required") in fields
    assert any(kind == "additional_property_not_allowed" for kind, _ in fields)

    not_object = client.post(
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": "a cat"},
        headers=BEARER,
    ).json()
    assert not_object["invalid_fields"][0]["field"] == "input"
    bad_format = client.post(
        "/v1/models/black-forest-labs/flux-schnell/predictions",
        json={"input": {"output_format": "jpeg"}},
        headers=BEARER,
    )
    assert bad_format.status_code == 422
    unknown = client.post(
        "/v1/models/acme/does-not-exist/predictions", json={"input": {}}, headers=BEARER
    )
    assert unknown.status_code == 404 and unknown.json()["status"] == 404

    cases = [
        ("flux-pro-1.1", {"prompt": 12}, "prompt"),
        ("flux-pro-1.1", {"prompt": "x", "width": 500}, "width"),
        ("flux-pro-1.1", {"prompt": "x", "height": 2048}, "height"),
        ("flux-pro-1.0-fill", {"prompt": "x"}, "image"),
        ("flux-pro-1.0-expand", {"prompt": "x"}, "image"),
        ("flux-2-pro", {"width": 512}, "prompt"),
    ]
    for model, body, field in cases:
        refused = client.post(f"/v1/{model}", json=body, headers=XKEY)
        assert refused.status_code == 422, (model, body)
        detail = refused.json()["detail"]
        assert [e["loc"] for e in detail] == [["body", field]], (model, body)
        assert all(isinstance(e["msg"], str) and isinstance(e["type"], str) for e in detail)
    not_a_model = client.post("/v1/flux-9000", json={"prompt": "x"}, headers=XKEY)
    assert not_a_model.status_code == 404 and not_a_model.json() == {"detail": "Not Found"}
    assert stats(client)["creates"] == 0


# -- faults ---------------------------------------------------------------------------------


def test_dropped_create_is_created_but_never_answered() -> None:
    config = fast(faults={"create": FaultSpec(drop_after_create_rate=1.0)})
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(
                "/v1/models/black-forest-labs/flux-schnell/predictions",
                json={"input": {"prompt": "lost answer"}},
                headers=BEARER,
            )
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/flux-pro-1.1", json={"prompt": "lost task"}, headers=XKEY)
        counters = stats(client)
        assert counters["creates"] == 2 and counters["dropped_creates"] == 2
        assert counters["creates_by_input"] == {
            '{"prompt":"lost answer"}': 1,
            '{"prompt":"lost task"}': 1,
        }
        assert "201" not in counters["status_codes"]
        # the lost prediction can be found again by listing, which is how a runner reconciles
        listed = client.get("/v1/predictions", headers=BEARER).json()["results"]
        assert [p["input"]["prompt"] for p in listed] == ["lost answer"]


def test_injected_errors_and_slowness() -> None:
    config = fast(
        faults={
            "get": FaultSpec(error_rate=1.0, error_status=503),
            "create": FaultSpec(error_rate=1.0, error_status=500),
            "download": FaultSpec(slow_rate=1.0, slow_seconds=0.2),
        }
    )
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        failed = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "x"}},
            headers=BEARER,
        )
        assert failed.status_code == 500 and failed.json()["status"] == 500
        assert client.post("/v1/flux-dev", json={"prompt": "x"}, headers=XKEY).status_code == 500
        assert stats(client)["creates"] == 0

        handle.sim.update_config({"faults": {"create": {"error_rate": 0.0}}})
        created = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {"prompt": "x"}},
            headers=BEARER,
        ).json()
        unavailable = client.get(created["urls"]["get"], headers=BEARER)
        assert unavailable.status_code == 503
        assert unavailable.headers["content-type"] == "application/problem+json"
        task = client.post("/v1/flux-dev", json={"prompt": "x"}, headers=XKEY).json()
        assert client.get(task["polling_url"], headers=XKEY).status_code == 503

        handle.sim.update_config({"faults": {"get": None}})
        done = poll_bfl(client, task["polling_url"], XKEY)
        started = time.monotonic()
        assert client.get(done["result"]["sample"]).status_code == 200
        assert time.monotonic() - started >= 0.19

        # created and billed, but answered with an error: the worst case for a client
        handle.sim.update_config({"faults": {"create": {"error_after_create_rate": 1.0}}})
        before = stats(client)["creates"]
        assert client.post("/v1/flux-dev", json={"prompt": "y"}, headers=XKEY).status_code == 500
        counters = stats(client)
        assert counters["creates"] == before + 1
        assert counters["status_codes"]["503"] == 2 and counters["status_codes"]["500"] == 3


def test_generation_outcomes_fail_and_moderate() -> None:
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        outcomes: dict[str, tuple[str, str]] = {}
        for name, fault in (
            ("fail", FaultSpec(fail_rate=1.0)),
            ("moderate", FaultSpec(moderate_rate=1.0)),
            ("request", FaultSpec(request_moderate_rate=1.0)),
        ):
            handle.sim.set_config(fast(faults={"create": fault}))
            prediction = client.post(
                "/v1/models/black-forest-labs/flux-schnell/predictions",
                json={"input": {"prompt": name}},
                headers=BEARER,
            ).json()
            task = client.post("/v1/flux-pro-1.1", json={"prompt": name}, headers=XKEY).json()
            replicate = poll_replicate(client, prediction["urls"]["get"], BEARER)
            bfl = poll_bfl(client, task["polling_url"], XKEY)
            assert replicate["output"] is None and bfl["result"] is None
            outcomes[name] = (replicate["status"] + ": " + replicate["error"], bfl["status"])
        assert outcomes["fail"][1] == "Error" and outcomes["fail"][0].startswith("failed")
        assert "NSFW" not in outcomes["fail"][0]
        assert outcomes["moderate"][1] == "Content Moderated"
        assert outcomes["request"][1] == "Request Moderated"
        assert "NSFW" in outcomes["moderate"][0] and "NSFW" in outcomes["request"][0]


def test_replicate_rate_limit_answers_429_with_retry_after() -> None:
    config = fast(replicate_create_limit=2, replicate_read_limit=100)
    with running_in_thread(config=config) as handle, httpx.Client(base_url=handle.url) as client:
        url = "/v1/models/black-forest-labs/flux-schnell/predictions"
        for _ in range(2):
            assert client.post(url, json={"input": {}}, headers=BEARER).status_code == 201
        throttled = client.post(url, json={"input": {}}, headers=BEARER)
        assert throttled.status_code == 429
        body = throttled.json()
        assert body["status"] == 429 and 1 <= body["retry_after"] <= 60
        assert body["detail"] == (
            f"Request was throttled. Expected available in {body['retry_after']} seconds."
        )
        assert "retry-after" not in throttled.headers
        # limits are per key
        other = {"Authorization": "Bearer key-2"}
        assert client.post(url, json={"input": {}}, headers=other).status_code == 201
        handle.sim.update_config({"retry_after_header": True})
        again = client.post(url, json={"input": {}}, headers=BEARER)
        assert again.headers["retry-after"] == str(again.json()["retry_after"])
        assert stats(client)["rate_limited"] == 2


def test_connection_reset_before_and_after_the_create() -> None:
    url = "/v1/models/black-forest-labs/flux-schnell/predictions"
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        for spec, prompt in (
            ({"reset_rate": 1.0}, "before"),
            ({"reset_after_create_rate": 1.0}, "after"),
        ):
            handle.sim.update_config({"faults": {"create": spec}})
            # no status line at all: the client cannot know whether anything was done
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                client.post(url, json={"input": {"prompt": prompt}}, headers=BEARER)
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                client.post("/v1/flux-dev", json={"prompt": prompt}, headers=XKEY)
            handle.sim.update_config({"faults": {"create": None}})
        counters = stats(client)
    assert counters["creates_by_input"] == {'{"prompt":"after"}': 2}
    assert counters["faults"] == {"create:reset": 2, "create:reset_after_create": 2}
    assert counters["dropped_creates"] == 2
    assert counters["status_codes"] == {}


def test_a_stall_past_the_clients_timeout_acts_only_if_it_was_after_the_create() -> None:
    url = "/v1/models/black-forest-labs/flux-schnell/predictions"
    faults = {"create": {"slow_rate": 1.0, "slow_seconds": 1.0}}
    with (
        running_in_thread(config=fast(faults=faults)) as handle,
        httpx.Client(base_url=handle.url, timeout=0.3) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            client.post(url, json={"input": {"prompt": "dropped from the queue"}}, headers=BEARER)
        handle.sim.update_config(
            {"faults": {"create": {"slow_rate": 0.0, "slow_after_create_rate": 1.0}}}
        )
        with pytest.raises(httpx.ReadTimeout):
            client.post(url, json={"input": {"prompt": "created, answer stalled"}}, headers=BEARER)
        time.sleep(1.2)  # past the stall: the first one must still not have been created
        counters = stats(client)
    assert counters["creates_by_input"] == {'{"prompt":"created, answer stalled"}': 1}
    # a slow answer to a patient client is still given in full
    slow = {"get": {"slow_rate": 1.0, "slow_seconds": 0.2}}
    with (
        running_in_thread(config=fast(faults=slow)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):
        created = client.post(url, json={"input": {}}, headers=BEARER).json()
        assert client.get(created["urls"]["get"], headers=BEARER).status_code == 200


def test_injected_rate_limits_say_when_to_come_back() -> None:
    faults = {
        "create": {"rate_limit_rate": 1.0, "retry_after": 0.25},
        "download": {"rate_limit_rate": 1.0, "retry_after": 2},
    }
    with (
        running_in_thread(config=fast(faults=faults)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):
        throttled = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {}},
            headers=BEARER,
        )
        assert throttled.status_code == 429 and throttled.json()["retry_after"] == 0.25
        refused = client.post("/v1/flux-dev", json={"prompt": "x"}, headers=XKEY)
        assert refused.status_code == 429 and refused.json()["detail"]
        handle.sim.update_config({"faults": {"create": None}})
        task = client.post("/v1/flux-dev", json={"prompt": "x"}, headers=XKEY).json()
        sample = poll_bfl(client, task["polling_url"], XKEY)["result"]["sample"]
        file_answer = client.get(sample)
        assert file_answer.status_code == 429 and file_answer.headers["retry-after"] == "2"


def _ready_file(client: httpx.Client) -> str:
    task = client.post("/v1/flux-dev", json={"prompt": "file"}, headers=XKEY).json()
    return str(poll_bfl(client, task["polling_url"], XKEY)["result"]["sample"])


def test_download_faults() -> None:
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        sample = _ready_file(client)
        whole = client.get(sample)
        assert whole.headers["content-type"] == "image/jpeg"

        def with_fault(**spec: Any) -> httpx.Response:
            handle.sim.update_config({"faults": {"download": spec}})
            try:
                return client.get(sample)
            finally:
                handle.sim.update_config({"faults": {"download": None}})

        with pytest.raises(httpx.RemoteProtocolError):  # fewer bytes than Content-Length
            with_fault(truncate_rate=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            with_fault(reset_rate=1.0)
        page = with_fault(not_image_rate=1.0)
        assert page.status_code == 200 and page.text.startswith("<!DOCTYPE html>")
        mislabelled = with_fault(wrong_type_rate=1.0)
        assert mislabelled.headers["content-type"].startswith("text/html")
        assert mislabelled.content == whole.content
        started = time.monotonic()
        dripped = with_fault(drip_rate=1.0, drip_seconds=0.4)
        assert dripped.content == whole.content and time.monotonic() - started >= 0.35
        for status in (403, 404, 410):
            assert with_fault(gone_rate=1.0, gone_status=status).status_code == status
        assert with_fault(error_rate=1.0, error_status=503).status_code == 503
        counters = stats(client)
    assert counters["faults"] == {
        "download:truncate": 1,
        "download:reset": 1,
        "download:not_image": 1,
        "download:wrong_type": 1,
        "download:drip": 1,
        "download:gone": 3,
        "download:error": 1,
    }
    assert counters["faults_injected"] == 9
    # the record of what the URL serves is the image, never the error page
    assert set(counters["files"].values()) == {hashlib.sha256(whole.content).hexdigest()}


def test_not_found_on_get_in_each_providers_shape() -> None:
    faults = {"get": {"not_found_rate": 1.0}}
    with (
        running_in_thread(config=fast(faults=faults)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):
        created = client.post(
            "/v1/models/black-forest-labs/flux-schnell/predictions",
            json={"input": {}},
            headers=BEARER,
        ).json()
        assert client.get(created["urls"]["get"], headers=BEARER).status_code == 404
        task = client.post("/v1/flux-dev", json={"prompt": "x"}, headers=XKEY).json()
        lost = client.get(task["polling_url"], headers=XKEY)
        assert lost.status_code == 200 and lost.json()["status"] == "Task not found"


def test_aborted_canceled_and_expired_outcomes() -> None:
    url = "/v1/models/black-forest-labs/flux-schnell/predictions"
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        seen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for name in ("abort", "cancel", "expire"):
            handle.sim.set_config(fast(faults={"create": {f"{name}_rate": 1.0}}))
            prediction = client.post(url, json={"input": {"prompt": name}}, headers=BEARER).json()
            task = client.post("/v1/flux-pro-1.1", json={"prompt": name}, headers=XKEY).json()
            seen[name] = (
                poll_replicate(client, prediction["urls"]["get"], BEARER),
                poll_bfl(client, task["polling_url"], XKEY),
            )
        # BFL still says Ready, but the sample URL has already expired
        expired_sample = client.get(seen["expire"][1]["result"]["sample"])
        counters = stats(client)
    assert expired_sample.status_code == 403
    aborted, bfl_aborted = seen["abort"]
    assert aborted["status"] == "aborted" and "started_at" not in aborted
    assert bfl_aborted["status"] == "Error"
    canceled, _ = seen["cancel"]
    assert canceled["status"] == "canceled" and canceled["started_at"]
    removed, bfl_expired = seen["expire"]
    assert removed["status"] == "succeeded" and removed["data_removed"] is True
    assert removed["output"] is None
    assert bfl_expired["status"] == "Ready"
    assert counters["credits_spent"]  # aborted ones are refunded, the others are billed
    by_outcome = {(g["style"], g["outcome"], g["expired_early"]) for g in counters["generations"]}
    assert ("replicate", "aborted", False) in by_outcome
    assert ("bfl", "succeeded", True) in by_outcome


def test_match_and_times_make_faults_deterministic() -> None:
    url = "/v1/models/black-forest-labs/flux-schnell/predictions"
    faults = {"create": {"error_rate": 1.0, "error_status": 503, "match": "#f", "times": 2}}
    with (
        running_in_thread(config=fast(faults=faults)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):

        def create(prompt: str) -> int:
            return client.post(url, json={"input": {"prompt": prompt}}, headers=BEARER).status_code

        assert [create("calm") for _ in range(3)] == [201, 201, 201]
        assert [create("stormy #f") for _ in range(4)] == [503, 503, 201, 201]
        assert [create("other #f") for _ in range(3)] == [503, 503, 201]
        assert stats(client)["faults"] == {"create:error": 4}


def test_fault_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="download route only"):
        SimConfig.from_dict({"faults": {"get": {"truncate_rate": 0.1}}})
    with pytest.raises(ValueError, match="create route only"):
        SimConfig.from_dict({"faults": {"download": {"abort_rate": 0.1}}})
    with pytest.raises(ValueError, match="add up to"):
        SimConfig.from_dict({"faults": {"get": {"error_rate": 0.6, "reset_rate": 0.6}}})
    with pytest.raises(ValueError, match="gone_status"):
        SimConfig.from_dict({"faults": {"download": {"gone_status": 500}}})
    with pytest.raises(ValueError, match="times"):
        SimConfig.from_dict({"faults": {"get": {"times": 0}}})
    with pytest.raises(ValueError, match="match"):
        SimConfig.from_dict({"faults": {"get": {"match": ""}}})
    every = {
        "create": {"reset_after_create_rate": 0.5, "slow_after_create_rate": 0.5, "expire_rate": 1},
        "download": {"drip_rate": 1.0, "drip_seconds": 2, "gone_rate": 0.5, "gone_status": 404},
        "list": {"rate_limit_rate": 0.5, "retry_after": 0.5, "times": 3},
        "get": {"not_found_rate": 0.1, "match": "#f"},
    }
    config = SimConfig.from_dict({"faults": every})
    assert SimConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# -- counters, control routes, config ------------------------------------------------------


def test_counters_and_control_routes(sim: tuple[SimHandle, httpx.Client]) -> None:
    _, client = sim
    url = "/v1/models/black-forest-labs/flux-schnell/predictions"
    for prompt in ("same", "same", "other"):
        client.post(url, json={"input": {"prompt": prompt, "seed": 1}}, headers=BEARER)
    client.get(
        client.post(url, json={"input": {"prompt": "auth"}}, headers=BEARER).json()["urls"]["get"],
        headers=BEARER,
    )
    counters = stats(client)
    assert counters["creates"] == 4
    assert counters["creates_by_input"]['{"prompt":"same","seed":1}'] == 2
    assert counters["status_codes"] == {"201": 4, "200": 1}
    generations = counters["generations"]
    assert len(generations) == 4
    assert all(
        g["completed_at"] - g["started_at"] == pytest.approx(0.05, abs=1e-4) for g in generations
    )
    assert all(g["duration"] == pytest.approx(0.05) for g in generations)
    assert all(g["created_at"] <= g["started_at"] for g in generations)
    json.dumps(counters)  # plain data only

    done = poll_replicate(
        client,
        client.get("/v1/predictions", headers=BEARER).json()["results"][0]["urls"]["get"],
        BEARER,
    )
    client.get(done["output"][0], headers=BEARER)
    assert stats(client)["downloads_with_auth"] == 1

    refused = client.post("/_sim/config", json={"faults": {"create": {"error_rate": 2}}})
    assert refused.status_code == 400
    assert client.post("/_sim/config", json={"no_such_field": 1}).status_code == 400
    updated = client.post("/_sim/config", json={"faults": {"get": {"error_rate": 0.5}}})
    assert updated.json()["faults"]["get"]["error_rate"] == 0.5
    assert client.get("/_sim/config").json()["duration_median"] == 0.05

    client.post("/_sim/config", json={"faults": {"get": None}})
    assert client.post("/_sim/reset").json() == {"ok": True}
    cleared = stats(client)
    assert cleared["creates"] == 0 and cleared["generations"] == [] and cleared["files"] == {}
    assert client.get(done["urls"]["get"], headers=BEARER).status_code == 404


def test_config_round_trips_through_json() -> None:
    config = SimConfig(
        seed=3,
        api_keys=["a"],
        credits=5.0,
        bfl_cost=None,
        faults={"create": FaultSpec(drop_after_create_rate=0.5, error_status=503)},
    )
    again = SimConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert SimConfig.from_dict({}) == SimConfig()
    merged = config.merged({"faults": {"create": {"error_rate": 0.1}}, "seed": 4})
    assert merged.seed == 4
    assert merged.faults["create"] == FaultSpec(
        drop_after_create_rate=0.5, error_status=503, error_rate=0.1
    )
    with pytest.raises(ValueError):
        SimConfig.from_dict({"faults": {"upload": {}}})
    with pytest.raises(ValueError):
        SimConfig.from_dict({"max_side": "big"})


def test_same_seed_gives_same_generations() -> None:
    def durations() -> list[tuple[float, str]]:
        config = SimConfig(seed=42, faults={"create": FaultSpec(fail_rate=0.5)})
        simulator = Simulator(config, clock=FakeClock())
        with (
            running_in_thread(sim=simulator) as handle,
            httpx.Client(base_url=handle.url) as client,
        ):
            for n in range(5):
                client.post("/v1/flux-dev", json={"prompt": str(n)}, headers=XKEY)
            return [(g["duration"], g["outcome"]) for g in stats(client)["generations"]]

    first, second = durations(), durations()
    assert first == second
    assert len({d for d, _ in first}) == 5  # drawn, not constant
    assert {o for _, o in first} == {"succeeded", "failed"}


# -- the providers' published schemas -------------------------------------------------------


def _as_json_schema(node: Any) -> Any:
    """Replicate's spec, read as the JSON Schema it means.

    It says OpenAPI 3.1 but still uses 3.0's `nullable`, which JSON Schema ignores; and its
    `version` is a `oneOf` whose two branches both accept "hidden", so that value could never
    match exactly one: read it as `anyOf`.
    """
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _as_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) and "type" in converted:
        converted["type"] = [converted["type"], "null"]
    if "oneOf" in converted:
        converted["anyOf"] = converted.pop("oneOf")
    return converted


def _validator(spec_file: str, schema_name: str) -> jsonschema.protocols.Validator:
    path = SPECS / spec_file
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing on CI, where shared/specs must be present")
        pytest.skip(f"{path} is not available here")
    spec = json.loads(path.read_text())
    components = spec["components"]
    if spec_file.startswith("replicate"):
        components = _as_json_schema(components)
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
    return jsonschema.Draft202012Validator(schema)


def test_answers_match_the_published_schemas(sim: tuple[SimHandle, httpx.Client]) -> None:
    handle, client = sim
    prediction_schema = _validator("replicate-openapi.json", "schemas_prediction_response")
    result_schema = _validator("bfl-openapi.json", "ResultResponse")
    async_schema = _validator("bfl-openapi.json", "AsyncResponse")
    invalid_schema = _validator("bfl-openapi.json", "HTTPValidationError")

    created = client.post(
        "/v1/predictions", json={"version": HEX, "input": {"prompt": "s"}}, headers=BEARER
    ).json()
    prediction_schema.validate(created)
    prediction_schema.validate(poll_replicate(client, created["urls"]["get"], BEARER))
    handle.sim.update_config({"faults": {"create": {"fail_rate": 1.0}}})
    failed = client.post(
        "/v1/models/black-forest-labs/flux-1.1-pro/predictions",
        json={"input": {"prompt": "f"}},
        headers=BEARER,
    ).json()
    prediction_schema.validate(poll_replicate(client, failed["urls"]["get"], BEARER))
    handle.sim.update_config({"faults": {"create": None}})

    task = client.post("/v1/flux-2-pro", json={"prompt": "s"}, headers=XKEY).json()
    async_schema.validate(task)
    result_schema.validate(client.get(task["polling_url"], headers=XKEY).json())
    result_schema.validate(poll_bfl(client, task["polling_url"], XKEY))
    result_schema.validate(client.get("/v1/get_result?id=nope", headers=XKEY).json())
    refused = client.post("/v1/flux-dev", json={"width": 100}, headers=XKEY).json()
    invalid_schema.validate(refused)
    assert refused["detail"]

    # and a broken answer is caught, so the checks above are not vacuous
    with pytest.raises(jsonschema.ValidationError):
        prediction_schema.validate({**created, "status": "Ready"})
    with pytest.raises(jsonschema.ValidationError):
        result_schema.validate({"id": "x", "status": "starting"})
