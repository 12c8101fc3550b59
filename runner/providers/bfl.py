"""BFL-style API (Black Forest Labs itself, DeerAPI's /flux mirror).

A create is `POST /v1/{model}` with the input as the body; the answer carries an id and a
`polling_url`. With `poll: polling_url` that URL is used verbatim (BFL's hosts vary by region),
but only when it belongs to the API's own domain: the key is never sent anywhere else. With
`poll: get_result` (aggregators, whose polling_url points upstream) the runner queries
`/v1/get_result?id=` on the configured base URL. There is no cancel and no list.
"""

from __future__ import annotations

from typing import Any

import httpx

from runner import bounds
from runner.campaign import ProviderConfig
from runner.providers.base import (
    ErrorKind,
    Handle,
    Listing,
    Phase,
    ProviderError,
    RemoteStatus,
    Submission,
)
from runner.providers.domains import registrable_domain, same_api_domain
from runner.providers.errors import (
    api_url,
    checked_id,
    checked_outputs,
    checked_url,
    request_json,
)

__all__ = ["BflProvider", "parse_result", "same_api_domain"]

_PHASES = {
    "Pending": Phase.PENDING,
    "Ready": Phase.SUCCEEDED,
    "Error": Phase.FAILED,
    "Request Moderated": Phase.MODERATED,
    "Content Moderated": Phase.MODERATED,
    "Task not found": Phase.NOT_FOUND,
}


def parse_result(body: Any) -> RemoteStatus:
    """A `get_result` answer as a status; its outputs beyond `runner.bounds` are an OVERSIZED
    error, its error text is cut to size."""
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise ProviderError(ErrorKind.PROTOCOL, f"not a task result: {str(body)[:200]}")
    raw = bounds.clip(body["status"], bounds.MAX_STATUS)
    phase = _PHASES.get(raw, Phase.UNKNOWN)
    result = body.get("result")
    outputs: tuple[str, ...] = ()
    if phase is Phase.SUCCEEDED and isinstance(result, dict):
        sample = result.get("sample")
        if isinstance(sample, str):
            outputs = (sample,)
        elif isinstance(sample, list):
            outputs = tuple(x for x in sample if isinstance(x, str))
    details = body.get("details")
    error = None
    if phase in (Phase.FAILED, Phase.MODERATED):
        error = raw if not details else bounds.clip(f"{raw}: {details}")
    progress = body.get("progress")
    return RemoteStatus(
        phase=phase,
        outputs=checked_outputs(outputs),
        error=error,
        raw_status=raw,
        progress=float(progress) if isinstance(progress, int | float) else None,
    )


class BflProvider:
    supports_cancel = False
    supports_list = False
    supports_webhooks = False  # BFL's webhooks are not used: runner polls (PROVIDERS.md)
    refreshes_outputs = False

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base = config.base_url.rstrip("/")
        if config.poll == "polling_url":
            registrable_domain("bfl.ai")  # read the suffix list now, not during a first poll

    async def create(
        self, model: str, input: dict[str, Any], *, deadline_seconds: float | None
    ) -> Submission:
        _, answer = await request_json(
            self.client, "POST", api_url(f"{self.base}/v1/{model}"), "create", json=input
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise ProviderError(ErrorKind.PROTOCOL, f"create answer has no id: {str(answer)[:200]}")
        remote_id = checked_id(answer["id"], "the task id")
        polling_url = answer.get("polling_url")
        if isinstance(polling_url, str):
            checked_url(polling_url, "its polling_url")
        else:
            polling_url = None
        cost = answer.get("cost")
        return Submission(
            handle=Handle(remote_id, polling_url),
            status=RemoteStatus(phase=Phase.PENDING, raw_status="Pending"),
            cost=float(cost) if isinstance(cost, int | float) else None,
        )

    def status_url(self, handle: Handle) -> httpx.URL:
        url = handle.polling_url
        if self.config.poll == "polling_url" and url:
            try:
                target = httpx.URL(url)  # verbatim, query string included
            except httpx.InvalidURL:
                target = None  # malformed: ask get_result instead
            # decided on the very URL the request goes to, so no two parsers can disagree
            if target is not None and same_api_domain(target, api_url(self.base)):
                return target
        return httpx.URL(f"{self.base}/v1/get_result", params={"id": handle.remote_id})

    async def poll(self, handle: Handle) -> RemoteStatus:
        url = self.status_url(handle)
        _, answer = await request_json(self.client, "GET", url, "poll", echo=handle.echo)
        return parse_result(answer)

    async def cancel(self, handle: Handle) -> None:
        raise ProviderError(ErrorKind.INVALID, "this API has no cancel", maybe_sent=False)

    async def list_matching(self, model: str, input: dict[str, Any], *, since: float) -> Listing:
        raise ProviderError(ErrorKind.INVALID, "this API cannot list tasks", maybe_sent=False)

    async def aclose(self) -> None:
        await self.client.aclose()
