"""Replicate-style API (Replicate itself, DeerAPI's and CometAPI's /replicate mirrors).

Creates go to `/v1/models/{owner}/{name}/predictions`, or to `/v1/predictions` with `version`
when the model is a version (`owner/name:id` or a bare 64-hex id). Queries and cancels always go
through the configured base URL: the aggregators copy Replicate's `urls.get` / `urls.cancel`
into their answers, and those hosts reject the aggregator's key.
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx

from runner.campaign import ProviderConfig
from runner.durations import format_duration
from runner.providers.base import ErrorKind, Handle, Phase, ProviderError, RemoteStatus, Submission
from runner.providers.errors import request_json

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


class ReplicateProvider:
    supports_cancel = True

    def __init__(self, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base = config.base_url.rstrip("/")

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
            url = f"{self.base}/v1/predictions"
            body: dict[str, Any] = {"version": model, "input": input}
        else:
            url = f"{self.base}/v1/models/{model}/predictions"
            body = {"input": input}
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

    async def aclose(self) -> None:
        await self.client.aclose()
