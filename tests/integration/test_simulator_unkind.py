"""The simulator's unkind parts, over HTTP: a provider clock that is not ours, Replicate removing
what a prediction was made of, aggregators that serve only what they document (and lie in what
they do not), BFL forgetting a task it has just accepted, and the counters that say whether
money was spent for nothing.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import math
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runner.simulator import SimConfig, Simulator, create_app, running_in_thread
from runner.simulator.server import SimHandle
from runner.simulator.webhooks import signed_headers
from runner.webhooks import serve as serve_receiver
from tests.integration.test_simulator import (
    BEARER,
    XKEY,
    FakeClock,
    _validator,
    fast,
    poll_bfl,
    poll_replicate,
    stats,
)

MODEL_PATH = "/v1/models/black-forest-labs/flux-schnell/predictions"
KEY_2 = {"Authorization": "Bearer key-2"}


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def date_on(sim: Simulator, offset: float) -> str:
    """The Date header a provider whose clock is `offset` seconds off shows right now."""
    return email.utils.formatdate(math.floor(sim.wall(sim.now()) + offset), usegmt=True)


def generation(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    return next(g for g in stats(client)["generations"] if g["id"] == prediction_id)


@pytest.fixture
def faked() -> Iterator[tuple[SimHandle, httpx.Client, FakeClock]]:
    clock = FakeClock()
    simulator = Simulator(fast(), clock=clock)
    with running_in_thread(sim=simulator) as handle, httpx.Client(base_url=handle.url) as client:
        yield handle, client, clock


@pytest.fixture
def sim_handle() -> Iterator[tuple[SimHandle, httpx.Client]]:
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        yield handle, client


# -- the provider's clock -------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-7200.0, 5400.75])
def test_every_answer_shows_the_providers_clock(offset: float) -> None:
    clock = FakeClock()
    config = fast(clock_offset=offset, api_keys=["key-1"], replicate_create_limit=2)
    simulator = Simulator(config, clock=clock)
    with running_in_thread(sim=simulator) as handle, httpx.Client(base_url=handle.url) as client:
        answers: dict[str, httpx.Response] = {}
        created = client.post(
            MODEL_PATH,
            json={"input": {"prompt": "clock"}},
            headers={**BEARER, "Cancel-After": "1m"},
        )
        answers["201"] = created
        answers["422"] = client.post(MODEL_PATH, json={"input": "x"}, headers=BEARER)
        answers["429"] = client.post(MODEL_PATH, json={"input": {}}, headers=BEARER)
        answers["401"] = client.get("/v1/predictions", headers={"Authorization": "Bearer no"})
        answers["404"] = client.get("/v1/predictions/nope", headers=BEARER)
        answers["gateway 404"] = client.get("/replicate/v1/predictions", headers=BEARER)
        task = client.post("/v1/flux-dev", json={"prompt": "clock"}, headers=XKEY)
        answers["bfl 200"] = task
        for name, answer in answers.items():
            assert answer.status_code == int(name.split()[-1]), name
            # one Date, the provider's: uvicorn adds none of its own
            assert answer.headers.get_list("date") == [date_on(handle.sim, offset)], name

        clock.advance(1.5)
        prediction = created.json()
        done = client.get(prediction["urls"]["get"], headers=BEARER)
        result = client.get(task.json()["polling_url"], headers=XKEY)
        sample = client.get(result.json()["result"]["sample"])
        handle.sim.update_config({"faults": {"get": {"error_rate": 1.0, "error_status": 503}}})
        unavailable = client.get(prediction["urls"]["get"], headers=BEARER)
        for answer in (done, result, sample, unavailable):
            assert answer.headers.get_list("date") == [date_on(handle.sim, offset)]
        assert unavailable.status_code == 503 and sample.status_code == 200

        # stats() stays on the true clock and says how far the provider's is
        counters = stats(client)
        assert counters["clock_offset"] == offset
        truth = generation(client, prediction["id"])
        bfl_truth = generation(client, task.json()["id"])
    body = done.json()
    assert truth["created_at"] == pytest.approx(handle.sim.wall(10_000.0), abs=1e-6)
    for name in ("created_at", "started_at", "completed_at"):
        assert epoch(body[name]) == pytest.approx(truth[name] + offset, abs=1e-5), name
    # the deadline is the provider's created_at plus Cancel-After
    assert epoch(body["deadline"]) == pytest.approx(epoch(body["created_at"]) + 60, abs=1e-5)
    times = result.json()["result"]
    assert times["start_time"] == pytest.approx(bfl_truth["started_at"] + offset, abs=1e-5)
    assert times["end_time"] == pytest.approx(bfl_truth["completed_at"] + offset, abs=1e-5)


def test_the_in_process_app_sends_the_same_date_header() -> None:
    clock = FakeClock()
    simulator = Simulator(fast(clock_offset=-90.5), clock=clock)

    async def exchange() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(simulator))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            created = await client.post(MODEL_PATH, json={"input": {}}, headers=BEARER)
            missing = await client.get("/v1/predictions/nope", headers=BEARER)
            refused = await client.get("/v1/get_result?id=x", headers=BEARER)
            return [created, missing, refused]

    answers = anyio.run(exchange)
    assert [a.status_code for a in answers] == [201, 404, 401]
    for answer in answers:
        assert answer.headers.get_list("date") == [date_on(simulator, -90.5)]


def _raw(url: str, request: bytes) -> bytes:
    """Everything the server sends for one request, until it closes the connection."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    received = []
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


def _head(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")


def test_answers_cut_off_on_purpose_carry_no_date() -> None:
    faults = {"create": {"drop_after_create_rate": 1.0}, "download": {"truncate_rate": 1.0}}
    with running_in_thread(config=fast(faults=faults)) as handle:
        body = b'{"prompt": "cut"}'
        create = (
            b"POST /v1/flux-dev HTTP/1.1\r\nHost: sim\r\nx-key: key-1\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        dropped = _head(_raw(handle.url, create))
        task_id = handle.sim.stats()["generations"][0]["id"]
        poll = (
            b"GET /v1/get_result?id=%s HTTP/1.1\r\nHost: sim\r\nx-key: key-1\r\n"
            b"Connection: close\r\n\r\n" % task_id.encode()
        )
        answered = _head(_raw(handle.url, poll))
        with httpx.Client(base_url=handle.url) as client:
            sample = poll_bfl(client, f"/v1/get_result?id={task_id}", XKEY)["result"]["sample"]
        path = urlsplit(sample)
        download = b"GET %s?%s HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n" % (
            path.path.encode(),
            path.query.encode(),
        )
        truncated = _head(_raw(handle.url, download))
    assert dropped[0].startswith(b"http/1.1 200") and truncated[0].startswith(b"http/1.1 200")
    assert not [h for h in dropped + truncated if h.startswith(b"date:")]
    assert len([h for h in answered if h.startswith(b"date:")]) == 1


def test_a_clock_step_keeps_past_times_and_moves_the_list_filters(
    faked: tuple[SimHandle, httpx.Client, FakeClock],
) -> None:
    handle, client, clock = faked
    before = client.post(MODEL_PATH, json={"input": {"prompt": "before"}}, headers=BEARER).json()
    clock.advance(10)
    assert client.post("/_sim/config", json={"clock_offset": 3600.0}).status_code == 200
    after_answer = client.post(MODEL_PATH, json={"input": {"prompt": "after"}}, headers=BEARER)
    after = after_answer.json()
    assert after_answer.headers["date"] == date_on(handle.sim, 3600.0)

    # what happened before the step keeps the time the clock showed then
    again = client.get(before["urls"]["get"], headers=BEARER).json()
    assert again["created_at"] == before["created_at"]
    assert epoch(again["completed_at"]) < epoch(before["created_at"]) + 1
    assert epoch(after["created_at"]) - epoch(before["created_at"]) == pytest.approx(3610)
    truths = {g["id"]: g["created_at"] for g in stats(client)["generations"]}
    assert truths[after["id"]] - truths[before["id"]] == pytest.approx(10)

    def listed(**params: str) -> list[str]:
        page = client.get("/v1/predictions", params=params, headers=BEARER).json()
        return [p["id"] for p in page["results"]]

    assert listed(created_after=after["created_at"]) == [after["id"]]
    assert listed(created_before=after["created_at"]) == [before["id"]]
    # a client that reads the filters on its own clock misses what it has just created
    true_now = handle.sim.wall(handle.sim.now())
    local_minute_ago = datetime.fromtimestamp(true_now - 60).astimezone().isoformat()
    handle.sim.update_config({"clock_offset": -7200.0})
    behind = client.post(MODEL_PATH, json={"input": {"prompt": "behind"}}, headers=BEARER).json()
    assert behind["id"] not in listed(created_after=local_minute_ago)
    assert behind["id"] in listed(created_before=local_minute_ago)


@pytest.mark.parametrize("offset", [-7200.0, 7200.0])
def test_signed_file_urls_work_whatever_the_offset(
    faked: tuple[SimHandle, httpx.Client, FakeClock], offset: float
) -> None:
    handle, client, clock = faked
    handle.sim.update_config({"clock_offset": offset})
    prediction = client.post(MODEL_PATH, json={"input": {"prompt": "u"}}, headers=BEARER).json()
    task = client.post("/v1/flux-dev", json={"prompt": "u"}, headers=XKEY).json()
    clock.advance(1)
    output = client.get(prediction["urls"]["get"], headers=BEARER).json()["output"][0]
    sample = client.get(task["polling_url"], headers=XKEY).json()["result"]["sample"]
    # the URL says when it expires, on the provider's clock
    expires = int(dict(p.split("=") for p in urlsplit(sample).query.split("&"))["exp"])
    assert expires == pytest.approx(handle.sim.wall(handle.sim.now()) + offset + 599, abs=2)
    assert client.get(output).status_code == 200
    assert client.get(sample).status_code == 200
    clock.advance(601)
    assert client.get(sample).status_code == 403
    assert client.get(output).status_code == 200  # Replicate's last an hour


def test_webhooks_are_stamped_on_the_providers_clock(
    faked: tuple[SimHandle, httpx.Client, FakeClock],
) -> None:
    handle, client, _ = faked
    handle.sim.update_config({"clock_offset": -321.0, "webhook_mode": "off"})
    body = {"input": {}, "webhook": "http://127.0.0.1:9/hook"}
    created = client.post(MODEL_PATH, json=body, headers=BEARER).json()
    prediction = handle.sim.find(created["id"])
    assert prediction is not None
    headers, _ = signed_headers(handle.sim, prediction, "msg_1", b"{}", "valid")
    true_now = handle.sim.wall(handle.sim.now())
    assert headers["webhook-timestamp"] == str(math.floor(true_now - 321.0))


# -- Replicate's data retention -------------------------------------------------------------


def test_replicate_removes_a_predictions_data_an_hour_after_its_create(
    faked: tuple[SimHandle, httpx.Client, FakeClock],
) -> None:
    handle, client, clock = faked
    # files would last longer: what removes the data here is its age, not its files' lifetime
    handle.sim.update_config({"replicate_output_ttl": 36_000.0, "queue_delay": 1000.0})
    inputs = {"prompt": "kept an hour", "seed": 3}
    created = client.post(MODEL_PATH, json={"input": inputs}, headers=BEARER).json()
    clock.advance(1001)  # finished 1000 s after its create
    done = client.get(created["urls"]["get"], headers=BEARER).json()
    assert done["input"] == inputs and done["logs"] and done["data_removed"] is False
    file_url = done["output"][0]
    clock.advance(3599 - 1001)
    assert client.get(created["urls"]["get"], headers=BEARER).json()["input"] == inputs
    assert client.get(file_url).status_code == 200
    clock.advance(1)  # 3600 s after the create, 2600 s after it finished

    removed = client.get(created["urls"]["get"], headers=BEARER).json()
    listed = client.get("/v1/predictions", headers=BEARER).json()["results"][0]
    canceled = client.post(f"/v1/predictions/{created['id']}/cancel", headers=BEARER).json()
    for shown in (removed, listed, canceled):
        assert shown["id"] == created["id"] and shown["status"] == "succeeded"
        assert shown["data_removed"] is True
        assert (shown["input"], shown["output"], shown["logs"]) == ({}, None, "")
    assert client.get(file_url).status_code == 404
    # the simulator itself still knows what was sent
    assert generation(client, created["id"])["input"] == inputs


def test_removed_data_is_empty_in_a_waited_create_and_its_webhook() -> None:
    received: list[dict[str, Any]] = []
    config = fast(faults={"create": {"expire_rate": 1.0}})
    with running_in_thread(config=config) as handle:

        async def exchange() -> dict[str, Any]:
            arrived = anyio.Event()

            async def hook(request: Request) -> Response:
                received.append(await request.json())
                arrived.set()
                return Response(status_code=204)

            receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
            async with anyio.create_task_group() as tg, httpx.AsyncClient(timeout=10) as client:
                url = await tg.start(serve_receiver, receiver, "127.0.0.1", 0)
                waited = await client.post(
                    f"{handle.url}{MODEL_PATH}",
                    json={
                        "input": {"prompt": "gone at once"},
                        "webhook": f"{url}/hook",
                        "webhook_events_filter": ["completed"],
                    },
                    headers={**BEARER, "Prefer": "wait=5"},
                )
                with anyio.fail_after(10):
                    await arrived.wait()
                tg.cancel_scope.cancel()
                return dict(waited.json())

        waited = anyio.run(exchange)
    assert waited["status"] == "succeeded" and waited["data_removed"] is True
    assert waited["input"] == {} and waited["output"] is None
    assert [(w["id"], w["input"], w["data_removed"]) for w in received] == [
        (waited["id"], {}, True)
    ]


# -- aggregators: documented routes only ----------------------------------------------------


def test_aggregators_serve_only_their_documented_routes_by_default(
    sim_handle: tuple[SimHandle, httpx.Client],
) -> None:
    _, client = sim_handle
    created = client.post(f"/replicate{MODEL_PATH}", json={"input": {}}, headers=BEARER)
    legacy = client.post(
        "/replicate/v1/predictions",
        json={"version": "black-forest-labs/flux-schnell", "input": {}},
        headers=BEARER,
    )
    got = client.get(f"/replicate/v1/predictions/{created.json()['id']}", headers=BEARER)
    task = client.post("/flux/v1/flux-dev", json={"prompt": "x"}, headers=BEARER)
    result = client.get(f"/flux/v1/get_result?id={task.json()['id']}", headers=BEARER)
    assert [a.status_code for a in (created, legacy, got, task, result)] == [201] * 2 + [200] * 3

    undocumented = [
        ("GET", "/replicate/v1/predictions"),
        ("POST", f"/replicate/v1/predictions/{created.json()['id']}/cancel"),
        ("GET", "/replicate/v1/webhooks/default/secret"),
        ("GET", "/replicate/v1/account"),
        ("GET", "/flux/v1/credits"),
        ("GET", "/replicate/v1/nothing/here"),
    ]
    # no key at all: the gateway's router turns them away before it looks at one
    for method, path in undocumented:
        for headers in (BEARER, {}):
            answer = client.request(method, path, headers=headers)
            assert answer.status_code == 404, (method, path)
            assert answer.json() == {
                "error": {
                    "message": f"Invalid URL ({method} {path})",
                    "type": "invalid_request_error",
                }
            }
    wrong_method = [
        ("DELETE", f"/replicate/v1/predictions/{created.json()['id']}", "GET, HEAD"),
        ("PUT", "/replicate/v1/predictions", "POST"),
        ("GET", f"/replicate{MODEL_PATH}", "POST"),
        ("GET", "/flux/v1/flux-dev", "POST"),
    ]
    for method, path, allowed in wrong_method:
        answer = client.request(method, path, headers=BEARER)
        assert answer.status_code == 405, (method, path)
        assert answer.headers["allow"] == allowed
        assert answer.json()["error"]["type"] == "invalid_request_error"
    counters = stats(client)
    assert counters["lists"] == 0 and counters["cancels"] == 0 and counters["auth_failures"] == 0

    # the providers themselves keep every route
    for path, headers in (
        ("/v1/predictions", BEARER),
        ("/v1/webhooks/default/secret", BEARER),
        ("/v1/account", BEARER),
        ("/v1/credits", XKEY),
    ):
        assert client.get(path, headers=headers).status_code == 200, path
    root_id = client.post(MODEL_PATH, json={"input": {}}, headers=BEARER).json()["id"]
    assert client.post(f"/v1/predictions/{root_id}/cancel", headers=BEARER).status_code == 200

    # switched on while it runs, each named route answers as Replicate's or BFL's does
    everything = ["list", "cancel", "webhook_secret", "account", "credits"]
    client.post("/_sim/config", json={"aggregator_routes": everything}).raise_for_status()
    for method, path in undocumented[:-1]:
        assert client.request(method, path, headers=BEARER).status_code == 200, path
    assert client.get("/replicate/v1/predictions").status_code == 401
    put = client.put("/replicate/v1/predictions", headers=BEARER)
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD, POST"


def test_an_aggregators_undocumented_list_may_lie(
    sim_handle: tuple[SimHandle, httpx.Client],
) -> None:
    handle, client = sim_handle
    handle.sim.update_config({"aggregator_routes": ["list"]})
    same = {"input": {"prompt": "the same prompt"}}
    mine = client.post(f"/replicate{MODEL_PATH}", json=same, headers=BEARER).json()
    theirs = client.post(f"/replicate{MODEL_PATH}", json=same, headers=KEY_2).json()
    root = client.post(MODEL_PATH, json=same, headers=BEARER).json()

    def listed(path: str = "/replicate/v1/predictions") -> dict[str, Any]:
        answer = client.get(path, headers=BEARER)
        assert answer.status_code == 200
        return dict(answer.json())

    assert [p["id"] for p in listed()["results"]] == [mine["id"]]
    handle.sim.update_config({"aggregator_list": "empty"})
    assert listed() == {"next": None, "previous": None, "results": []}
    handle.sim.update_config({"aggregator_list": "foreign"})
    foreign = listed()["results"]
    # the same input, another customer's prediction: this key cannot even read it
    assert [(p["id"], p["input"]) for p in foreign] == [(theirs["id"], same["input"])]
    theirs_read = client.get(f"/replicate/v1/predictions/{theirs['id']}", headers=BEARER)
    assert theirs_read.status_code == 404
    # Replicate's own list is never the aggregator's
    assert [p["id"] for p in listed("/v1/predictions")["results"]] == [root["id"]]


def test_aggregator_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"aggregator_routes: unknown route.*'lists'"):
        SimConfig.from_dict({"aggregator_routes": ["list", "lists"]})
    with pytest.raises(ValueError, match="aggregator_routes must be a list"):
        SimConfig.from_dict({"aggregator_routes": "list"})
    with pytest.raises(ValueError, match="aggregator_list must be one of"):
        SimConfig.from_dict({"aggregator_list": "made-up"})
    config = SimConfig.from_dict({"aggregator_routes": ["credits"], "aggregator_list": "foreign"})
    assert SimConfig.from_dict(config.to_dict()) == config


# -- BFL ------------------------------------------------------------------------------------


def test_bfl_create_with_webhook_url_answers_without_polling_url(
    sim_handle: tuple[SimHandle, httpx.Client],
) -> None:
    _, client = sim_handle
    webhook_schema = _validator("bfl-openapi.json", "AsyncWebhookResponse")
    polling_schema = _validator("bfl-openapi.json", "AsyncResponse")
    hook = "http://127.0.0.1:9/bfl-hook"
    for prefix, headers in (("", XKEY), ("/flux", BEARER)):
        answer = client.post(
            f"{prefix}/v1/flux-dev", json={"prompt": "hooked", "webhook_url": hook}, headers=headers
        )
        assert answer.status_code == 200
        body = answer.json()
        assert "polling_url" not in body
        assert (body["webhook_url"], body["status"]) == (hook, "Pending")
        assert set(body) == {"id", "status", "webhook_url", "cost", "input_mp", "output_mp"}
        webhook_schema.validate(body)
        assert not polling_schema.is_valid(body)
        # no polling URL to follow: get_result by id still knows it
        done = poll_bfl(client, f"{prefix}/v1/get_result?id={body['id']}", headers)
        assert done["status"] == "Ready"


def test_bfl_may_not_know_a_task_it_has_just_accepted(
    faked: tuple[SimHandle, httpx.Client, FakeClock],
) -> None:
    handle, client, clock = faked
    handle.sim.update_config({"bfl_not_found_after_create": 5.0})
    task = client.post("/v1/flux-dev", json={"prompt": "soon"}, headers=XKEY).json()
    other = client.post("/flux/v1/flux-dev", json={"prompt": "soon"}, headers=BEARER).json()
    urls = [
        (task["polling_url"], XKEY),
        (f"/v1/get_result?id={task['id']}", XKEY),
        (f"/flux/v1/get_result?id={other['id']}", BEARER),
    ]
    ids = [task["id"], task["id"], other["id"]]
    for seconds in (0.0, 4.9):
        clock.advance(seconds)
        for (url, headers), task_id in zip(urls, ids, strict=True):
            answer = client.get(url, headers=headers)
            assert answer.status_code == 200
            assert answer.json() == {"id": task_id, "status": "Task not found"}
    clock.advance(0.2)
    for url, headers in urls:
        assert client.get(url, headers=headers).json()["status"] == "Ready"


def test_bfl_forgets_only_some_new_tasks_without_shifting_other_draws() -> None:
    def run(style: str = "bfl", **overrides: Any) -> tuple[list[float], list[bool]]:
        simulator = Simulator(
            SimConfig(seed=5, duration_median=1.0, **overrides), clock=FakeClock()
        )
        with (
            running_in_thread(sim=simulator) as handle,
            httpx.Client(base_url=handle.url) as client,
        ):
            found = []
            for n in range(20):  # fewer than the 24 BFL lets run at once
                if style == "replicate":
                    body = {"input": {"prompt": f"t{n}"}}
                    client.post(MODEL_PATH, json=body, headers=BEARER).raise_for_status()
                    continue
                task = client.post("/v1/flux-dev", json={"prompt": f"t{n}"}, headers=XKEY)
                answer = client.get(task.json()["polling_url"], headers=XKEY).json()
                found.append(answer["status"] != "Task not found")
            draws = [g["duration"] for g in stats(client)["generations"]]
        return draws, found

    plain_draws, plain_found = run()
    draws, found = run(bfl_not_found_after_create=3.0, bfl_not_found_rate=0.5)
    again_draws, again_found = run(bfl_not_found_after_create=3.0, bfl_not_found_rate=0.5)
    assert all(plain_found)
    assert 0 < found.count(False) < len(found)  # sporadic
    assert (again_draws, again_found) == (draws, found)  # and reproducible
    # nothing else drawn differently: not with the setting, nor from Replicate's creates,
    # which have no such draw
    assert draws == plain_draws == run("replicate")[0]


def test_new_timing_settings_are_checked() -> None:
    for field, value in (
        ("clock_offset", "soon"),
        ("clock_offset", math.inf),
        ("replicate_data_retention", -1),
        ("bfl_not_found_after_create", -0.5),
        ("bfl_not_found_rate", 1.5),
        ("bfl_not_found_rate", True),
    ):
        with pytest.raises(ValueError, match=field):
            SimConfig.from_dict({field: value})
    config = SimConfig.from_dict(
        {"clock_offset": -3.5, "replicate_data_retention": 60, "bfl_not_found_rate": 0.25}
    )
    assert SimConfig.from_dict(config.to_dict()) == config


# -- counters that judge money --------------------------------------------------------------


def test_generations_say_who_paid_for_what_and_which_files_went_out() -> None:
    with running_in_thread(config=fast()) as handle, httpx.Client(base_url=handle.url) as client:
        inputs = {"prompt": "two", "num_outputs": 2}
        pair = client.post(
            "/v1/predictions",
            json={"version": "stability-ai/sdxl", "input": inputs},
            headers=BEARER,
        ).json()
        task = client.post("/v1/flux-dev", json={"prompt": "one"}, headers={"x-key": "key-2"})
        handle.sim.update_config({"faults": {"create": {"abort_rate": 1.0}}})
        aborted = client.post(MODEL_PATH, json={"input": {"prompt": "never ran"}}, headers=BEARER)
        handle.sim.update_config({"faults": {"create": None}})

        outputs = poll_replicate(client, pair["urls"]["get"], BEARER)["output"]
        sample = poll_bfl(client, task.json()["polling_url"], {"x-key": "key-2"})
        poll_replicate(client, aborted.json()["urls"]["get"], BEARER)

        def download(url: str, **fault: Any) -> None:
            handle.sim.update_config({"faults": {"download": None}})
            if fault:
                handle.sim.update_config({"faults": {"download": fault}})
            with contextlib.suppress(httpx.HTTPError):
                client.get(url, timeout=0.2).read()

        download(outputs[0], truncate_rate=1.0)  # cut short: not served whole
        download(outputs[1], not_image_rate=1.0)  # a 200, but not the file
        assert generation(client, pair["id"])["files_served"] == 0
        download(outputs[1])
        download(outputs[1])  # the same file again counts once
        download(sample["result"]["sample"], drip_rate=1.0, drip_seconds=0.1)
        by_id = {g["id"]: g for g in stats(client)["generations"]}

    first, bfl, never = by_id[pair["id"]], by_id[task.json()["id"]], by_id[aborted.json()["id"]]
    assert first["input"] == inputs and bfl["input"] == {"prompt": "one"}
    assert (first["files_served"], first["num_outputs"]) == (1, 2)
    assert bfl["files_served"] == 1 and never["files_served"] == 0
    assert (first["billed"], bfl["billed"], never["billed"]) == (True, True, False)
    assert first["key_hash"] == hashlib.sha256(b"key-1").hexdigest()[:12] == never["key_hash"]
    assert bfl["key_hash"] == hashlib.sha256(b"key-2").hexdigest()[:12]
    assert "key-1" not in str(first) and "key-2" not in str(bfl)


def test_a_download_abandoned_halfway_is_not_counted_as_served() -> None:
    faults = {"download": {"drip_rate": 1.0, "drip_seconds": 0.6}}
    with (
        running_in_thread(config=fast(faults=faults)) as handle,
        httpx.Client(base_url=handle.url) as client,
    ):
        task = client.post("/v1/flux-dev", json={"prompt": "slow file"}, headers=XKEY).json()
        sample = poll_bfl(client, task["polling_url"], XKEY)["result"]["sample"]
        with client.stream("GET", sample) as answer:
            assert answer.status_code == 200
            next(answer.iter_raw())  # then hang up with the rest still coming
        # past the time the trickle would have ended: that it never did cannot be waited for
        time.sleep(0.8)
        abandoned = generation(client, task["id"])["files_served"]
        whole = client.get(sample)
        served = generation(client, task["id"])["files_served"]
    assert abandoned == 0
    assert whole.status_code == 200 and served == 1
