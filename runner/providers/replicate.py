"""Replicate-style API (Replicate itself, DeerAPI's and CometAPI's /replicate mirrors).

Creates go to `/v1/models/{owner}/{name}/predictions`, or to `/v1/predictions` with `version`
when the model is a version (`owner/name:id` or a bare 64-hex id). Queries and cancels always go
through the configured base URL: the aggregators copy Replicate's `urls.get` / `urls.cancel`
into their answers, and those hosts reject the aggregator's key.

With webhooks on (`use_webhook`), creates also carry `webhook` and
`webhook_events_filter: ["completed"]`; the signing secret comes from
`GET /v1/webhooks/default/secret` and is handed to the caller, never kept or logged here.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from runner.campaign import ProviderConfig
from runner.durations import format_duration
from runner.providers.base import ErrorKind, Handle, Phase, ProviderError, RemoteStatus, Submission
from runner.providers.errors import api_url, request_json

_VERSION_ID = re.compile(r"[0-9a-f]{64}")
_PHASES = {
    "starting": Phase.PENDING,
    "processing": Phase.RUNNING,
    "succeeded": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "canceled": Phase.CANCELED,
    "aborted": Phase.ABORTED,
}
MIN_CANCEL_AFTER = 5.0  # seconds; Replicate refuses shorter


def _next_params(next_url: Any) -> dict[str, str] | None:
    """The query of a `next` link, to send to our own base URL (its host may be upstream's)."""
    if not isinstance(next_url, str) or not next_url:
        return None
    query = parse_qs(urlsplit(next_url).query)
    return {name: values[0] for name, values in query.items() if values} or None


def is_version(model: str) -> bool:
    return ":" in model or bool(_VERSION_ID.fullmatch(model))


def parse_prediction(body: Any) -> RemoteStatus:
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise ProviderError(ErrorKind.PROTOCOL, f"not a prediction: {str(body)[:200]}")
    raw = body["status"]
    phase = _PHASES.get(raw, Phase.UNKNOWN)
    error = body.get("error")
    error_text = str(error) if error else None
    if phase is Phase.FAILED and error_text and "nsfw" in error_text.lower():
        phase = Phase.MODERATED
    output = body.get("output")
    if isinstance(output, str):
        outputs: tuple[str, ...] = (output,)
    elif isinstance(output, list):
        outputs = tuple(x for x in output if isinstance(x, str))
    else:
        outputs = ()
    return RemoteStatus(
        phase=phase,
        outputs=outputs,
        error=error_text,
        raw_status=raw,
        data_removed=bool(body.get("data_removed")),
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _same_model(prediction: dict[str, Any], model: str) -> bool:
    """Whether a listed prediction ran `model` (aggregators answer "version": "hidden")."""
    if is_version(model):
        version = model.rsplit(":", 1)[-1]
        return prediction.get("version") in (version, "hidden", None)
    return prediction.get("model") in (model, None)


# The one webhook event the runner asks for: the prediction reached a terminal state.
WEBHOOK_EVENTS = ("completed",)
WEBHOOK_SECRET_PREFIX = "whsec_"

# Listing covers the attempt from a little before it: the provider's clock is not ours.
LIST_SLACK = 120.0
MAX_LIST_PAGES = 50


class ReplicateProvider:
    supports_cancel = True
    supports_list = True
    refreshes_outputs = True

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base = config.base_url.rstrip("/")
        self.webhook_url: str | None = None

    @property
    def webhook_account(self) -> str:
        return ":".join(self.config.account)

    def use_webhook(self, url: str | None) -> None:
        self.webhook_url = url

    async def webhook_secret(self) -> str:
        """The account's webhook signing secret (`whsec_...`)."""
        url = f"{self.base}/v1/webhooks/default/secret"
        _, answer = await request_json(self.client, "GET", url, "poll")
        key = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(key, str) or not key.startswith(WEBHOOK_SECRET_PREFIX):
            raise ProviderError(ErrorKind.PROTOCOL, "the webhook secret answer has no whsec_ key")
        return key

    async def create(
        self, model: str, input: dict[str, Any], *, deadline_seconds: float | None
    ) -> Submission:
        headers: dict[str, str] = {}
        if self.config.prefer_wait:
            headers["Prefer"] = f"wait={self.config.prefer_wait}"
        if deadline_seconds is not None:
            seconds = max(MIN_CANCEL_AFTER, math.ceil(deadline_seconds))
            headers["Cancel-After"] = format_duration(seconds)
        if is_version(model):
            url = api_url(f"{self.base}/v1/predictions")
            body: dict[str, Any] = {"version": model, "input": input}
        else:
            url = api_url(f"{self.base}/v1/models/{model}/predictions")
            body = {"input": input}
        if self.webhook_url is not None:
            body["webhook"] = self.webhook_url
            body["webhook_events_filter"] = list(WEBHOOK_EVENTS)
        _, answer = await request_json(
            self.client, "POST", url, "create", json=body, headers=headers
        )
        status = parse_prediction(answer)
        remote_id = answer.get("id")
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderError(ErrorKind.PROTOCOL, "create answer has no prediction id")
        return Submission(handle=Handle(remote_id), status=status)

    async def poll(self, handle: Handle) -> RemoteStatus:
        url = f"{self.base}/v1/predictions/{handle.remote_id}"
        _, answer = await request_json(self.client, "GET", url, "poll")
        return parse_prediction(answer)

    async def cancel(self, handle: Handle) -> None:
        url = f"{self.base}/v1/predictions/{handle.remote_id}/cancel"
        await request_json(self.client, "POST", url, "cancel")

    async def find(self, model: str, input: dict[str, Any], *, since: float) -> Submission | None:
        """The account's prediction with exactly this model and input created since `since`.

        Pages through `GET /v1/predictions` (newest first) until the window is covered. The
        `next` cursor is followed through the configured base URL: aggregators copy upstream
        URLs. Returns None only when the whole window was listed without a match.
        """
        after = since - LIST_SLACK
        params: dict[str, str] = {"created_after": _iso(after)}
        url = f"{self.base}/v1/predictions"
        for _ in range(MAX_LIST_PAGES):
            _, page = await request_json(self.client, "GET", url, "list", params=params)
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                raise ProviderError(ErrorKind.PROTOCOL, "list answer has no results")
            for item in results:
                if not isinstance(item, dict):
                    continue
                created = _epoch(item.get("created_at"))
                if created is not None and created < after:
                    return None  # older than the window: everything newer was seen
                if item.get("input") == input and _same_model(item, model):
                    return Submission(Handle(str(item["id"])), parse_prediction(item))
            next_params = _next_params(page.get("next"))
            if next_params is None:
                return None
            params = next_params
        raise ProviderError(ErrorKind.PROTOCOL, f"more than {MAX_LIST_PAGES} pages to list")

    async def aclose(self) -> None:
        await self.client.aclose()
