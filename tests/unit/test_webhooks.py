"""Webhook verification (Standard Webhooks, as Replicate signs them) and the receiver's answers.

The receiver is exercised in memory through httpx's ASGI transport: no sockets here.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import httpx
import pytest

from runner.campaign import ProviderConfig
from runner.providers.base import WebhookSource
from runner.providers.replicate import ReplicateProvider
from runner.webhooks import (
    MAX_BODY,
    PATH,
    TOLERANCE,
    Delivery,
    Receiver,
    ReplayGuard,
    WebhookRejected,
    check_public_url,
    parse_listen,
    secret_key,
    sign,
    verify,
)

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
KEY = secret_key(SECRET)
OTHER = secret_key("whsec_" + base64.b64encode(b"another secret, not ours").decode())
NOW = 1_750_000_000.0
BODY = json.dumps({"id": "p1", "status": "succeeded"}).encode()


def headers(
    body: bytes = BODY, *, key: bytes = KEY, msg_id: str = "msg_1", at: float = NOW
) -> dict[str, str]:
    stamp = str(int(at))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + sign(key, msg_id, stamp, body),
    }


def rejected(hdrs: dict[str, str], body: bytes = BODY, now: float = NOW) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        verify([KEY], hdrs, body, now)
    return info.value


# -- signatures -------------------------------------------------------------------------------


def test_the_standard_webhooks_example_signature() -> None:
    # The example from the Standard Webhooks specification and its reference libraries.
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body) == expected


def test_a_valid_webhook_verifies() -> None:
    assert verify([KEY], headers(), BODY, NOW) == Delivery("msg_1", int(NOW))


def test_a_webhook_signed_with_another_secret_is_refused() -> None:
    error = rejected(headers(key=OTHER))
    assert (error.status, error.reason) == (401, "no valid signature")


def test_a_tampered_body_is_refused() -> None:
    tampered = BODY.replace(b"succeeded", b"failed")
    assert rejected(headers(), tampered).status == 401


def test_a_changed_id_or_timestamp_breaks_the_signature() -> None:
    assert rejected({**headers(), "webhook-id": "msg_2"}).status == 401
    assert rejected({**headers(), "webhook-timestamp": str(int(NOW) + 1)}).status == 401


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing: str) -> None:
    hdrs = headers()
    del hdrs[missing]
    error = rejected(hdrs)
    assert (error.status, error.reason) == (400, f"missing {missing}")
    assert rejected({**headers(), missing: "  "}).status == 400


@pytest.mark.parametrize("stamp", ["soon", "-5", "1.5e9", "1" * 20])
def test_a_timestamp_that_is_not_epoch_seconds_is_refused(stamp: str) -> None:
    assert rejected({**headers(), "webhook-timestamp": stamp}).status == 400


def test_a_stale_or_future_timestamp_is_refused_even_when_correctly_signed() -> None:
    assert verify([KEY], headers(at=NOW - TOLERANCE), BODY, NOW)  # at the edge: accepted
    assert verify([KEY], headers(at=NOW + TOLERANCE), BODY, NOW)
    for at in (NOW - TOLERANCE - 1, NOW + TOLERANCE + 1, NOW - 86400):
        error = rejected(headers(at=at))
        assert (error.status, error.reason) == (401, "webhook-timestamp too far from now")


def test_one_valid_signature_among_several_is_enough() -> None:
    good = headers()["webhook-signature"]
    bad = headers(key=OTHER)["webhook-signature"]
    mixed = {**headers(), "webhook-signature": f"{bad} v1,bm90IGEgc2lnbmF0dXJl {good}"}
    assert verify([KEY], mixed, BODY, NOW).id == "msg_1"
    # ... but not a valid one under another version tag, nor only invalid ones
    other_version = {**headers(), "webhook-signature": good.replace("v1,", "v1a,")}
    assert rejected(other_version).status == 401
    assert rejected({**headers(), "webhook-signature": f"{bad} v1,"}).status == 401


def test_any_of_several_accounts_secrets_verifies() -> None:
    assert verify([OTHER, KEY], headers(), BODY, NOW).id == "msg_1"
    assert verify([KEY, OTHER], headers(key=OTHER), BODY, NOW).id == "msg_1"
    with pytest.raises(WebhookRejected):
        verify([], headers(), BODY, NOW)


def test_secrets_must_be_whsec_base64() -> None:
    assert secret_key(SECRET) == b"0123456789abcdef01234567"
    for bad in ("0123", "whsec_", "whsec_not base64!", "Bearer whsec_AAAA"):
        with pytest.raises(ValueError):
            secret_key(bad)


# -- replays ----------------------------------------------------------------------------------


def test_a_replayed_id_is_refused_within_the_window_and_forgotten_after() -> None:
    guard = ReplayGuard()
    first = Delivery("msg_1", int(NOW))
    assert guard.first_time(first, NOW)
    assert not guard.first_time(first, NOW + 1)
    assert not guard.first_time(first, NOW + TOLERANCE)  # still within the window
    assert guard.first_time(Delivery("msg_2", int(NOW)), NOW + 2)
    # once the window is over the id is forgotten: the timestamp check refuses it by then
    assert guard.first_time(Delivery("msg_3", int(NOW + 2 * TOLERANCE)), NOW + 2 * TOLERANCE)
    assert len(guard) == 1


def test_the_replay_memory_is_bounded() -> None:
    guard = ReplayGuard(max_ids=10)
    for n in range(50):
        assert guard.first_time(Delivery(f"msg_{n}", int(NOW)), NOW)
    assert len(guard) <= 11
    assert not guard.first_time(Delivery("msg_49", int(NOW)), NOW)  # the newest are kept


# -- the receiver -----------------------------------------------------------------------------


class Hints:
    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.calls: list[str] = []

    async def __call__(self, prediction_id: str) -> bool:
        self.calls.append(prediction_id)
        return prediction_id in self.known


def post_all(
    receiver: Receiver, requests: list[tuple[str, bytes, dict[str, str]]]
) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=receiver.app, client=("203.0.113.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
            return [await client.post(path, content=b, headers=h) for path, b, h in requests]

    return anyio.run(main)


def test_the_receiver_answers_and_hints_only_valid_first_deliveries() -> None:
    hints = Hints({"p1"})
    receiver = Receiver([KEY], hints, clock=lambda: NOW)
    pending = json.dumps({"id": "p1", "status": "processing"}).encode()
    not_prediction = json.dumps(["p1"]).encode()
    answers = post_all(
        receiver,
        [
            (PATH, BODY, headers(key=OTHER)),  # forged
            (PATH, BODY, {}),  # unsigned
            (PATH, BODY, headers(at=NOW - 3600)),  # stale
            (PATH, BODY, headers()),  # valid
            (PATH, BODY, headers()),  # the same again
            ("/prefix" + PATH, pending, headers(pending, msg_id="msg_2")),  # not finished yet
            (PATH, not_prediction, headers(not_prediction, msg_id="msg_3")),
            ("/elsewhere", BODY, headers(msg_id="msg_4")),
        ],
    )
    assert [a.status_code for a in answers] == [401, 400, 401, 204, 400, 204, 400, 404]
    assert hints.calls == ["p1"]  # once, for the valid terminal one
    assert receiver.stats.accepted == 2 and receiver.stats.hinted == 1
    assert receiver.stats.rejected == {
        "no valid signature": 1,
        "missing webhook-id, webhook-timestamp, webhook-signature": 1,
        "webhook-timestamp too far from now": 1,
        "replayed webhook-id": 1,
        "body is not a prediction": 1,
    }


def test_a_valid_webhook_about_an_unknown_prediction_is_accepted_and_changes_nothing() -> None:
    hints = Hints(set())
    receiver = Receiver([KEY], hints, clock=lambda: NOW)
    assert [a.status_code for a in post_all(receiver, [(PATH, BODY, headers())])] == [204]
    assert hints.calls == ["p1"] and receiver.stats.hinted == 0


def test_a_body_over_the_cap_is_refused_before_it_is_read_whole() -> None:
    hints = Hints({"p1"})
    receiver = Receiver([KEY], hints, clock=lambda: NOW, max_body=1000)
    big = json.dumps({"id": "p1", "status": "succeeded", "logs": "x" * 2000}).encode()
    answers = post_all(receiver, [(PATH, big, headers(big))])
    assert answers[0].status_code == 413 and hints.calls == []
    assert MAX_BODY == 1_000_000

    async def chunks() -> Any:  # no Content-Length: the cap holds while reading
        for _ in range(100):
            yield b"x" * 100

    async def main() -> int:
        transport = httpx.ASGITransport(app=receiver.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
            answer = await client.post(PATH, content=chunks(), headers=headers(big))
            return answer.status_code

    assert anyio.run(main) == 413 and hints.calls == []


def test_the_receiver_never_shows_its_keys() -> None:
    receiver = Receiver([KEY], Hints(set()))
    assert SECRET not in repr(receiver) and repr(KEY) not in repr(receiver)


def test_only_post_is_accepted() -> None:
    receiver = Receiver([KEY], Hints(set()))

    async def main() -> int:
        transport = httpx.ASGITransport(app=receiver.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:
            return (await client.get(PATH)).status_code

    assert anyio.run(main) == 405


# -- options and the provider's side ----------------------------------------------------------


def test_listen_addresses_and_public_urls() -> None:
    assert parse_listen("0.0.0.0:8788") == ("0.0.0.0", 8788)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8788", ":8788", "host:", "host:http", "host:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    assert check_public_url("https://runner.example.com/hooks/") == (
        "https://runner.example.com/hooks"
    )
    for bad in ("runner.example.com", "ftp://x", "https://x/?a=1", "http://"):
        with pytest.raises(ValueError):
            check_public_url(bad)


def test_creates_ask_for_a_completed_webhook_only_when_told() -> None:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/webhooks/default/secret":
            return httpx.Response(200, json={"key": SECRET})
        sent.append(json.loads(request.content))
        return httpx.Response(201, json={"id": "p1", "status": "starting"})

    config = ProviderConfig("replicate", "replicate", "https://api.replicate.com", "bearer", "K")
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    provider = ReplicateProvider(config, client)
    assert isinstance(provider, WebhookSource)
    hook = "https://runner.example.com/webhooks/replicate"

    async def main() -> str:
        await provider.create("acme/model", {"prompt": "a fox"}, deadline_seconds=None)
        provider.use_webhook(hook)
        for model in ("acme/model", "acme/model:" + "0" * 64):
            await provider.create(model, {"prompt": "a fox"}, deadline_seconds=None)
        secret = await provider.webhook_secret()
        await provider.aclose()
        return secret

    assert anyio.run(main) == SECRET
    assert sent[0] == {"input": {"prompt": "a fox"}}
    for body in sent[1:]:
        assert body["webhook"] == hook
        assert body["webhook_events_filter"] == ["completed"]
    assert sent[2]["version"] == "acme/model:" + "0" * 64
