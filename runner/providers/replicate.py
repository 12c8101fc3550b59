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
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from runner import bounds
from runner.campaign import ProviderConfig
from runner.durations import format_duration
from runner.providers.base import (
    Candidate,
    ErrorKind,
    Handle,
    Listing,
    Phase,
    ProviderError,
    RemoteStatus,
    Submission,
)
from runner.providers.clock import ProviderClock
from runner.providers.errors import (
    api_url,
    checked_id,
    checked_outputs,
    checked_url,
    request_json,
)

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
    """A prediction object as a status; its outputs beyond `runner.bounds` are an OVERSIZED
    error, its error text is cut to size."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise ProviderError(ErrorKind.PROTOCOL, f"not a prediction: {str(body)[:200]}")
    raw = bounds.clip(body["status"], bounds.MAX_STATUS)
    phase = _PHASES.get(raw, Phase.UNKNOWN)
    error = body.get("error")
    error_text = bounds.clip(str(error)) if error else None
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
        outputs=checked_outputs(outputs),
        error=error_text,
        raw_status=raw,
        data_removed=bool(body.get("data_removed")),
    )


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

# A listing reaches back this much before the attempt (on the provider's clock): the local
# clock may have been stepped between the attempt and now (NTP, a laptop that slept).
LIST_SLACK = 120.0
MAX_LIST_PAGES = 50
# Replicate removes an API prediction's input about an hour after it is created; a window
# reaching back further may hold a prediction that can no longer be recognised.
RETENTION = 55 * 60.0


def _listed(page: Any) -> list[tuple[dict[str, Any], float]]:
    """The predictions of one list page with their creation times; an answer that is not a
    list of predictions is a protocol error (an aggregator's route may answer anything)."""
    results = page.get("results") if isinstance(page, dict) else None
    if not isinstance(results, list):
        raise ProviderError(ErrorKind.PROTOCOL, "list answer has no results")
    out = []
    for item in results:
        created = _epoch(item.get("created_at")) if isinstance(item, dict) else None
        if created is None or not isinstance(item.get("id"), str) or not item["id"]:
            raise ProviderError(
                ErrorKind.PROTOCOL,
                f"list answer holds something else than predictions: {str(item)[:200]}",
            )
        checked_id(item["id"], "a listed prediction's id")
        out.append((item, created))
    return out


class ReplicateProvider:
    refreshes_outputs = True

    def __init__(
        self,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        routes: frozenset[str] = frozenset(),
        clock: ProviderClock | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.base = config.base_url.rstrip("/")
        self.webhook_url: str | None = None
        self.supports_list = "list" in routes
        self.supports_cancel = "cancel" in routes
        self.supports_webhooks = "webhook_secret" in routes
        self.clock = clock or ProviderClock()

    @property
    def webhook_account(self) -> str:
        return ":".join(self.config.account)

    def use_webhook(self, url: str | None) -> None:
        self.webhook_url = url

    async def webhook_secret(self) -> str:
        """The account's webhook signing secret (`whsec_...`)."""
        url = f"{self.base}/v1/webhooks/default/secret"
        _, answer = await request_json(self.client, "GET", url, "secret")
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
        remote_id = answer.get("id") if isinstance(answer, dict) else None
        if isinstance(remote_id, str):
            checked_id(remote_id, "the prediction id")
        try:
            status = parse_prediction(answer)
        except ProviderError as error:
            if error.kind is not ErrorKind.OVERSIZED or not remote_id:
                raise
            # The prediction is known by a sane id; only what it says of itself is beyond use
            # (a `Prefer: wait` answer's outputs): it is held, and its polls tell the rest.
            raw = bounds.clip(str(answer.get("status")), bounds.MAX_STATUS)
            status = RemoteStatus(Phase.PENDING, raw_status=raw)
        if not isinstance(remote_id, str) or not remote_id:
            raise ProviderError(ErrorKind.PROTOCOL, "create answer has no prediction id")
        created = _epoch(answer.get("created_at"))
        if created is not None and not self.config.prefer_wait:
            # stamped as it was created, microseconds exact: a finer reading than `Date` (an
            # answer held by `Prefer: wait` comes seconds later, so it says less)
            self.clock.observe(created)
        return Submission(handle=Handle(remote_id), status=status)

    async def poll(self, handle: Handle) -> RemoteStatus:
        url = f"{self.base}/v1/predictions/{handle.remote_id}"
        _, answer = await request_json(self.client, "GET", url, "poll", echo=handle.echo)
        return parse_prediction(answer)

    async def cancel(self, handle: Handle) -> None:
        url = f"{self.base}/v1/predictions/{handle.remote_id}/cancel"
        await request_json(self.client, "POST", url, "cancel")

    async def list_matching(self, model: str, input: dict[str, Any], *, since: float) -> Listing:
        """The account's predictions of `model` with exactly this input created since the
        local time `since`, less the slack, on the provider's clock.

        Pages through `GET /v1/predictions` (newest first) until a prediction older than the
        window, following `next` through the configured base URL (aggregators copy upstream
        URLs). No `created_after` filter is sent: the window is cut off here, on the clock
        each page's own `Date` sets, whatever a proxy makes of filters.
        """
        url = f"{self.base}/v1/predictions"
        params: dict[str, str] | None = None
        start: float | None = None
        found: list[Candidate] = []
        removed: list[Candidate] = []
        for _ in range(MAX_LIST_PAGES):
            _, page = await request_json(
                self.client, "GET", url, "list", params=params, limit=bounds.MAX_LIST_ANSWER
            )
            if start is None:  # the first page's Date header has just set the clock
                start = self.clock.provider_time(since) - LIST_SLACK
                reach = self.clock.provider_time(self.clock.now()) - start
                if reach > RETENTION:
                    why = (
                        f"the attempt was {format_duration(reach)} ago, longer than the "
                        "provider keeps the inputs it could be recognised by"
                    )
                    return Listing(start, unknowable=why)
            for item, created in _listed(page):
                if created < start:  # older than the window: everything newer was seen
                    return Listing(start, tuple(reversed(found)), tuple(reversed(removed)))
                if not _same_model(item, model):
                    continue
                removed_data = item.get("data_removed") or (input and not item.get("input"))
                if removed_data or item.get("input") == input:
                    submission = Submission(Handle(item["id"]), parse_prediction(item))
                    (removed if removed_data else found).append(Candidate(submission, created))
            next_url = page.get("next")
            if isinstance(next_url, str):
                checked_url(next_url, "the list's next link")
            next_params = _next_params(next_url)
            if next_params is None:
                return Listing(start, tuple(reversed(found)), tuple(reversed(removed)))
            params = next_params
        assert start is not None
        why = f"more than {MAX_LIST_PAGES} pages of predictions were made since the attempt"
        return Listing(start, unknowable=why)

    async def aclose(self) -> None:
        await self.client.aclose()
