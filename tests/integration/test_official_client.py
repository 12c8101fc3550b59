"""The official `replicate` Python client works against the simulator unchanged.

If the client can create, wait and get against it, the simulator's Replicate routes speak the
protocol the client was written for (paths, auth, JSON shapes, status values).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import replicate

from runner.simulator import SimConfig, running_in_thread


@contextmanager
def official_client(base_url: str, token: str) -> Iterator[replicate.Client]:
    client = replicate.Client(api_token=token, base_url=base_url)
    try:
        yield client
    finally:
        # The client has no close(); its lazily made httpx client would leak a socket.
        client._client.close()


@pytest.mark.parametrize("prefix", ["", "/replicate"])
def test_replicate_client_create_wait_get(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    # the client's list is not documented at the aggregators: this simulated one serves it
    config = SimConfig(duration_median=0.2, duration_sigma=0.1, aggregator_routes=["list"])
    with running_in_thread(config=config) as sim:
        with official_client(sim.url + prefix, "r8_test") as client:
            prediction = client.predictions.create(
                model="black-forest-labs/flux-schnell", input={"prompt": "a brass owl"}
            )
            assert prediction.status in ("starting", "processing")
            prediction.wait()
            assert prediction.status == "succeeded"
            assert isinstance(prediction.output, list)
            assert prediction.output[0].startswith("http")
            again = client.predictions.get(prediction.id)
            assert again.id == prediction.id and again.output == prediction.output
            assert again.input == {"prompt": "a brass owl"}
            page = client.predictions.list()
            assert prediction.id in [p.id for p in page.results]
        assert sim.sim.stats()["creates"] == 1


def test_replicate_client_sees_a_wrong_token_as_unauthenticated() -> None:
    config = SimConfig(duration_median=0.1, api_keys=["r8_right"])
    with running_in_thread(config=config) as sim:
        with (
            official_client(sim.url, "r8_wrong") as client,
            pytest.raises(replicate.exceptions.ReplicateError) as caught,
        ):
            client.predictions.create(model="black-forest-labs/flux-schnell", input={"prompt": "x"})
        assert caught.value.status == 401
