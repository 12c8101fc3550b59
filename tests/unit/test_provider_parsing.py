"""Provider answers to typed values, and error classification, without a server."""

from __future__ import annotations

import httpx
import pytest

from runner.providers.base import ErrorKind, Phase
from runner.providers.bfl import parse_result, same_api_domain
from runner.providers.errors import from_exception, from_response, parse_retry_after
from runner.providers.replicate import is_version, parse_prediction


def response(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "op", "kind"),
    [
        (429, "create", ErrorKind.RATE_LIMITED),
        (401, "poll", ErrorKind.AUTH),
        (403, "create", ErrorKind.AUTH),
        (402, "create", ErrorKind.NO_CREDIT),
        (422, "create", ErrorKind.INVALID),
        (400, "create", ErrorKind.INVALID),
        (404, "create", ErrorKind.INVALID),
        (404, "poll", ErrorKind.NOT_FOUND),
        (500, "create", ErrorKind.SERVER),
        (503, "poll", ErrorKind.SERVER),
    ],
)
def test_classification(status: int, op: str, kind: ErrorKind) -> None:
    assert from_response(response(status, {"detail": "x"}), op).kind is kind  # type: ignore[arg-type]


def test_messages_come_from_the_provider() -> None:
    replicate = response(
        422,
        {
            "title": "Invalid",
            "detail": "bad input",
            "status": 422,
            "invalid_fields": [
                {"type": "required", "field": "input.prompt", "description": "missing"}
            ],
        },
    )
    msg = from_response(replicate, "create").message
    assert "bad input" in msg and "input.prompt: missing" in msg
    bfl = response(
        422, {"detail": [{"loc": ["body", "width"], "msg": "multiple of 32", "type": "v"}]}
    )
    assert from_response(bfl, "create").message == "width: multiple of 32"


def test_retry_after_from_header_seconds_date_and_body() -> None:
    assert from_response(response(429, {}, {"Retry-After": "7"}), "create").retry_after == 7
    assert from_response(response(429, {"retry_after": 10}), "create").retry_after == 10
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(date, now=1445412480 - 30) == pytest.approx(30)
    assert parse_retry_after("soon") is None


def test_transport_errors_say_whether_the_request_may_have_been_sent() -> None:
    refused = from_exception(httpx.ConnectError("refused"))
    assert refused.kind is ErrorKind.NETWORK and not refused.maybe_sent
    timeout = from_exception(httpx.ReadTimeout("slow"))
    assert timeout.kind is ErrorKind.TIMEOUT and timeout.maybe_sent


def test_replicate_prediction_parsing() -> None:
    single = parse_prediction({"status": "succeeded", "output": "https://f/1.webp"})
    assert single.phase is Phase.SUCCEEDED and single.outputs == ("https://f/1.webp",)
    many = parse_prediction({"status": "succeeded", "output": ["a", "b"]})
    assert many.outputs == ("a", "b")
    assert parse_prediction({"status": "aborted"}).phase is Phase.ABORTED
    nsfw = parse_prediction({"status": "failed", "error": "NSFW content detected"})
    assert nsfw.phase is Phase.MODERATED
    assert parse_prediction({"status": "weird"}).phase is Phase.UNKNOWN
    removed = parse_prediction({"status": "succeeded", "output": None, "data_removed": True})
    assert removed.data_removed and removed.outputs == ()


def test_bfl_result_parsing() -> None:
    ready = parse_result({"id": "1", "status": "Ready", "result": {"sample": "https://s/1.jpg"}})
    assert ready.phase is Phase.SUCCEEDED and ready.outputs == ("https://s/1.jpg",)
    assert parse_result({"id": "1", "status": "Task not found"}).phase is Phase.NOT_FOUND
    assert parse_result({"id": "1", "status": "Content Moderated"}).phase is Phase.MODERATED
    assert parse_result({"id": "1", "status": "Request Moderated"}).phase is Phase.MODERATED
    pending = parse_result({"id": "1", "status": "Pending", "progress": 0.4})
    assert pending.phase is Phase.PENDING and pending.progress == 0.4
    assert parse_result({"id": "1", "status": "Generating"}).phase is Phase.UNKNOWN


def test_versions_and_key_safe_polling_hosts() -> None:
    assert is_version("owner/name:" + "a" * 64)
    assert is_version("a" * 64)
    assert not is_version("black-forest-labs/flux-schnell")
    assert same_api_domain("https://api.eu2.bfl.ai/v1/get_result?id=1", "https://api.bfl.ai")
    assert same_api_domain("https://gateway.bfl.ai/x", "https://api.bfl.ai")
    assert not same_api_domain(
        "https://api.eu2.bfl.ai/v1/get_result", "https://api.deerapi.com/flux"
    )
    assert not same_api_domain("https://evil.example/bfl.ai", "https://api.bfl.ai")
    assert not same_api_domain("file:///etc/passwd", "https://api.bfl.ai")
    assert same_api_domain("http://127.0.0.1:5/eu2/v1/get_result", "http://127.0.0.1:5")


def test_bfl_polling_url_is_used_verbatim_with_its_query() -> None:
    from runner.campaign import ProviderConfig
    from runner.providers.base import Handle
    from runner.providers.bfl import BflProvider

    config = ProviderConfig("bfl", "bfl", "http://127.0.0.1:9", "x-key", "K", poll="polling_url")
    provider = BflProvider(config, httpx.AsyncClient())
    url = provider.status_url(Handle("abc", "http://127.0.0.1:9/eu2/v1/get_result?id=abc"))
    assert str(url) == "http://127.0.0.1:9/eu2/v1/get_result?id=abc"
    upstream = Handle("abc", "https://api.eu2.bfl.ai/v1/get_result?id=abc")
    assert str(provider.status_url(upstream)) == "http://127.0.0.1:9/v1/get_result?id=abc"
    for malformed in ("http://127.0.0.1:99999999/v1/get_result?id=abc", "http://[::1/x", "::"):
        fallback = provider.status_url(Handle("abc", malformed))
        assert str(fallback) == "http://127.0.0.1:9/v1/get_result?id=abc", malformed
    agg = ProviderConfig("d", "bfl", "http://127.0.0.1:9/flux", "bearer", "K", poll="get_result")
    aggregator = BflProvider(agg, httpx.AsyncClient())
    assert str(aggregator.status_url(upstream)) == "http://127.0.0.1:9/flux/v1/get_result?id=abc"
